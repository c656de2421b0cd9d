"""Greedy means greedy: a checkpoint whose generation_config samples (do_sample, top_k 1,
top_p 0.001, temperature 0.1) with repetition_penalty 1.05 (the real Qwen2.5-VL-Instruct's)
leaks into no decoding path of the project: the greedy generation of primer/rl/eval/passk
(mmrpt.generation), the scorer's own argmax loop (lm-eval, VLMEvalKit) and TRL's GRPO
rollouts (pure temperature sampling at rl.temperature)."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrpt.evaluation.scorer import Query, Scorer
from mmrpt.generation import decoding_config, generate
from mmrpt.modeling.loader import load_vlm
from mmrpt.modeling.qwen_layout import GENERATION_CONFIG, build_qwen25_vl


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    path = build_qwen25_vl(
        ["A red car. It is 5 p.m. Dr. Lee waits."] * 20, tmp_path_factory.mktemp("q")
    )
    model, processor = load_vlm(path, dtype=torch.float32)
    assert model.generation_config.repetition_penalty == GENERATION_CONFIG["repetition_penalty"]
    assert model.generation_config.do_sample is True
    return model.eval(), processor


def effective(model, config):
    """The config generate() really uses (the checkpoint's defaults merged in)."""
    merged, _ = model._prepare_generation_config(config)
    return merged


def test_project_greedy_ignores_the_checkpoints_sampling_and_penalty(real_layout):
    model, processor = real_layout
    cfg = effective(model, decoding_config(model, processor.tokenizer, 12))
    assert (cfg.do_sample, cfg.repetition_penalty, cfg.num_beams) == (False, 1.0, 1)
    images = [Image.new("RGB", (64, 48), c) for c in ("red", "blue", "green")]
    prompts = ["What is shown?", "Colour?", "Describe the image."]
    torch.manual_seed(0)
    texts = generate(model, processor, images, prompts, max_new_tokens=12)
    # the scorer's argmax loop (no penalty, no sampling) gives the same tokens
    scorer = Scorer(model, processor, max_new_tokens=12)
    answers = scorer.answer([Query(im, q) for im, q in zip(images, prompts, strict=True)])
    assert [t.strip() for t in texts] == answers
    torch.manual_seed(1)  # and sampling seeds change nothing
    assert generate(model, processor, images, prompts, max_new_tokens=12) == texts


def test_grpo_rollouts_sample_at_rl_temperature_only(real_layout, tmp_path: Path):
    from datasets import Dataset
    from trl.models.utils import unwrap_model_for_generation

    from mmrpt.rl.grpo import make_grpo_trainer

    model, processor = real_layout
    data = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}
                ],
                "image": Image.new("RGB", (56, 56)),
                "targets": ["a"],
                "masked_caption": "[1]",
                "meta": "{}",
            }
        ]
        * 4
    )
    trainer = make_grpo_trainer(
        model,
        processor,
        data,
        out_dir=tmp_path,
        steps=1,
        batch_size=2,
        num_generations=2,
        temperature=0.8,
        lr=1e-5,
        beta=0.0,
        loss_type="dapo",
        max_completion_length=8,
        reward_weights={"exact": 1.0},
        save_steps=10,
        seed=0,
    )
    with unwrap_model_for_generation(
        trainer.model_wrapped, trainer.accelerator, generation_kwargs=trainer.generation_kwargs
    ) as unwrapped:
        cfg = effective(unwrapped, trainer.generation_config)
    assert cfg.do_sample is True and cfg.temperature == 0.8
    assert cfg.repetition_penalty == 1.0 and cfg.top_p == 1.0 and cfg.top_k in (0, None)
    assert model.generation_config.repetition_penalty == 1.05  # the checkpoint is untouched
