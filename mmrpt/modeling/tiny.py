"""The embedded tiny VLM: a Qwen2-VL-architecture model built from a small config, with a
byte-level BPE tokenizer trained locally and the stock Qwen2-VL processor around it.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on the texts given (the
world's captions and templates), the weights are randomly initialised, and the result is saved
as an ordinary Hugging Face folder that `mmrpt.modeling.loader.load_vlm` loads exactly as it
loads a real checkpoint such as Qwen/Qwen2.5-VL-3B-Instruct.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen2-VL chat template (images as <|vision_start|><|image_pad|><|vision_end|>).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model. head_dim = hidden_size / num_heads; mrope needs head_dim/2."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_heads: int = 4
    image_size: int = 112
    max_position_embeddings: int = 2048


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as Qwen2's), trained on ``texts``, with Qwen2-VL's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast, image_size: int) -> Qwen2VLProcessor:
    pixels = image_size * image_size
    size = {"shortest_edge": min(pixels, 56 * 56), "longest_edge": pixels}
    image_processor = Qwen2VLImageProcessor(
        size=size, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        size=size, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(
    spec: TinySpec, tokenizer: PreTrainedTokenizerFast, seed: int = 0
) -> Qwen2VLForConditionalGeneration:
    head_dim = spec.hidden_size // spec.num_heads
    if head_dim % 2 or spec.hidden_size % spec.num_heads:
        raise ValueError(
            f"hidden_size {spec.hidden_size} / num_heads {spec.num_heads} must give "
            "an even head_dim"
        )
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]  # Qwen's 16:24:24 shape
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=spec.max_position_embeddings,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            embed_dim=spec.vision_embed_dim,
            hidden_size=spec.hidden_size,
            num_heads=spec.vision_heads,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def build_tiny_vlm(
    texts: Iterable[str], spec: TinySpec, out_dir: str | Path, seed: int = 0
) -> Path:
    """Train the tokenizer, build model + processor, and save them as one HF folder."""
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    processor = build_processor(tokenizer, spec.image_size)
    model = build_model(spec, tokenizer, seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)  # safetensors
    processor.save_pretrained(out_dir)
    return out_dir
