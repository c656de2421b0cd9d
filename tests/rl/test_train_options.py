"""The memory and speed options of every trainer (mmrpt.training.TrainOptions): LoRA adapters
merged into a plain model, gradient checkpointing that leaves the result unchanged, the
global batch split over processes, rollout micro-batches, and vLLM rollouts wired through
TRL's config but refused where CUDA or vllm is missing."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmrpt.cli import main
from mmrpt.finetune.vqa import make_sft_trainer
from mmrpt.modeling.loader import load_vlm
from mmrpt.rl.fillin import FillInDataset
from mmrpt.rl.grpo import VLLMUnavailable, grpo_config, grpo_dataset, make_grpo_trainer
from mmrpt.training import LoraSpec, TrainOptions, make_trainer, save_trained

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def fillin_trainer(tiny_rl, out: Path, options: TrainOptions, model=None):
    base, processor, samples, root = tiny_rl
    return make_trainer(
        model if model is not None else base,
        processor,
        FillInDataset(samples, root, processor),
        out_dir=out,
        max_steps=2,
        batch_size=4,
        lr=1e-2,
        weight_decay=0.0,
        warmup_ratio=0.0,
        save_steps=100,
        save_total_limit=1,
        log_steps=1,
        seed=0,
        options=options,
    )


def test_lora_trains_the_adapters_and_saves_a_plain_merged_model(tiny_rl, tmp_path: Path):
    _, processor, _, _ = tiny_rl
    base_dir = tmp_path / "model"  # where the fixture built the tiny model
    lora = LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=sorted(PROJECTIONS))
    trainer = fillin_trainer(tiny_rl, tmp_path / "ck", TrainOptions(lora=lora))
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    assert trainer.rows_per_step() == 4
    out = save_trained(trainer, processor, tmp_path / "out", base=base_dir)
    assert not (out / "adapter_config.json").exists()
    before, after = load_file(base_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # only the language model's projections moved (merged adapters); the vision tower,
    # embeddings and norms are the base model's
    assert changed and {k.split(".")[-2] for k in changed} <= PROJECTIONS
    assert all("visual" not in k for k in changed)
    load_vlm(out)  # a plain model folder


def test_gradient_checkpointing_leaves_the_steps_unchanged(tiny_rl, tmp_path: Path):
    base, _, _, _ = tiny_rl
    start = {k: v.clone() for k, v in base.state_dict().items()}
    results = []
    for gc in (False, True):
        base.load_state_dict(start)
        trainer = fillin_trainer(
            tiny_rl, tmp_path / f"ck{gc}", TrainOptions(gradient_checkpointing=gc)
        )
        assert trainer.args.gradient_checkpointing is gc
        trainer.train()
        assert trainer.model.is_activation_checkpointing is gc  # really recomputed
        results.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    diff = max((results[0][k] - results[1][k]).abs().max().item() for k in start)
    assert diff < 1e-5, diff


def grpo_args(**kwargs):
    return grpo_config(
        out_dir="ck",
        steps=1,
        batch_size=4,
        num_generations=2,
        temperature=1.0,
        lr=1e-3,
        beta=0.0,
        loss_type="dapo",
        max_completion_length=12,
        reward_weights=[1.0],
        save_steps=10,
        seed=0,
        **kwargs,
    )


def test_rollouts_per_process_split_the_global_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one = grpo_args()
    assert one.per_device_train_batch_size == 8 and one.generation_batch_size == 8
    # 4 prompts x 2 rollouts over 2 processes, each training in 2 micro-batches of 2
    split = grpo_args(options=TrainOptions(world_size=2), micro_batches=2)
    assert split.per_device_train_batch_size == 2
    assert split.gradient_accumulation_steps == split.steps_per_generation == 2
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        grpo_args(options=TrainOptions(world_size=3))
    assert not one.gradient_checkpointing  # TRL's default is on; ours follows the option
    assert grpo_args(options=TrainOptions(gradient_checkpointing=True)).gradient_checkpointing


def test_vllm_rollouts_are_wired_and_refused_without_cuda(tiny_rl, tmp_path, monkeypatch):
    cfg = grpo_args(vllm=True, vllm_memory=0.4)
    assert cfg.use_vllm and cfg.vllm_mode == "colocate"
    assert cfg.vllm_gpu_memory_utilization == 0.4 and cfg.vllm_tensor_parallel_size == 1
    assert not grpo_args().use_vllm  # the CPU path is unchanged
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal is for machines without one")
    model, processor, samples, root = tiny_rl
    with pytest.raises(VLLMUnavailable, match="rl.vllm=true needs CUDA"):
        make_grpo_trainer(
            model,
            processor,
            grpo_dataset(samples[:4], root),
            out_dir=tmp_path / "ck",
            steps=1,
            batch_size=2,
            num_generations=2,
            temperature=1.0,
            lr=1e-3,
            beta=0.0,
            loss_type="dapo",
            max_completion_length=12,
            reward_weights={"exact": 1.0},
            save_steps=10,
            seed=0,
            vllm=True,
        )


def test_the_rl_stage_refuses_vllm_before_any_work(tiny_project: Path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["rl", "--arm", "mmrpt", "--seed", "0", "-S", "rl.vllm=true"]) == 2
    assert "rl.vllm=true needs CUDA" in capsys.readouterr().err
    assert [p.name for p in tiny_project.iterdir()] == ["params.yaml"]


def test_sft_and_grpo_trainers_take_lora(tiny_rl, tmp_path: Path):
    model, processor, samples, root = tiny_rl
    lora = TrainOptions(lora=LoraSpec(r=2, target_modules=["q_proj", "v_proj"]))
    rows = [
        {
            "prompt": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}
            ],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": "red"}]}],
            "images": [model_image(root, s)],
        }
        for s in samples[:4]
    ]
    sft = make_sft_trainer(
        model,
        processor,
        rows,
        out_dir=tmp_path / "sft",
        steps=1,
        batch_size=2,
        lr=1e-3,
        save_steps=10,
        seed=0,
        options=lora,
    )
    assert hasattr(sft.model, "peft_config")
    sft.train()
    assert sft.rows_per_step() == 2
    fresh, _ = load_vlm(tmp_path / "model", dtype=torch.float32)
    grpo = make_grpo_trainer(
        fresh,
        processor,
        grpo_dataset(samples[:4], root),
        out_dir=tmp_path / "grpo",
        steps=1,
        batch_size=2,
        num_generations=2,
        temperature=1.0,
        lr=1e-3,
        beta=0.0,
        loss_type="dapo",
        max_completion_length=8,
        reward_weights={"exact": 1.0},
        save_steps=10,
        seed=0,
        options=lora,
    )
    assert hasattr(grpo.model, "peft_config")
    grpo.train()
    assert grpo.rows_per_step() == 4  # 2 prompts x 2 rollouts


def model_image(root: Path, sample):
    from mmrpt.images import open_rgb

    return open_rgb(root / sample.image)
