"""The tiny params every end-to-end test runs with (seconds, not minutes)."""

TINY = {
    "seed": 0,
    "data": {"n_train": 64, "n_dev": 8, "n_test": 16, "image_size": 112},
    "model": {"tiny": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64,
                       "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "vision_depth": 1,
                       "vision_embed_dim": 16, "vision_heads": 2}},
    "warmup": {"max_steps": 40, "batch_size": 8, "lr": 0.003, "save_steps": 10,
               "log_steps": 5, "eval_samples": 16},
    "score": {"batch_size": 8, "shard_size": 20, "diagnostic_samples": 8, "replacements": 2},
    "mask": {"gallery_samples": 4},
}
