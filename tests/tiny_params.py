"""The tiny params every end-to-end test runs with (seconds, not minutes)."""

TINY = {
    "seed": 0,
    "data": {"n_train": 64, "n_dev": 8, "n_test": 16, "image_size": 112},
    "model": {
        "tiny": {
            "vocab_size": 400,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_layers": 2,
            "num_heads": 2,
            "num_kv_heads": 1,
            "vision_depth": 1,
            "vision_embed_dim": 16,
            "vision_heads": 2,
        }
    },
    "warmup": {
        "max_steps": 40,
        "batch_size": 8,
        "lr": 0.003,
        "save_steps": 10,
        "log_steps": 5,
        "eval_samples": 16,
    },
    "score": {"batch_size": 8, "shard_size": 20, "diagnostic_samples": 8, "replacements": 2},
    "mask": {"gallery_samples": 4},
    "primer": {
        "n_samples": 32,
        "max_steps": 120,
        "batch_size": 8,
        "save_steps": 60,
        "lr": 0.005,
        "eval_samples": 8,
        "max_new_tokens": 24,
    },
    "rl": {
        "steps": 4,
        "batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 40,
        "save_steps": 2,
        "eval_samples": 8,
    },
    "sft": {"steps": 4, "batch_size": 4, "save_steps": 2},
    "eval": {"limit": 20, "masked_samples": 8},
}
