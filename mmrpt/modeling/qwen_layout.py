"""A config-built Qwen2.5-VL with the real token layout, for tests and benches (no download).

What is real: the vocabulary size (151,936 rows of the embedding and output head), the ids of
the 22 special tokens (<|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645, ...,
<|vision_start|> 151652, <|image_pad|> 151655, ...), the Qwen2.5-VL-Instruct chat template
(TRL ships the original as trl/chat_templates/qwen2_5_vl.jinja), the processor (patch 14,
merge 2, the real default pixel bounds) and the Instruct checkpoint's generation_config
(sampling on, repetition_penalty 1.05, top_k 1, top_p 0.001, temperature 0.1, eos
[151645, 151643]). What is not: the weights (random), the width and depth (tiny) and the BPE
merges (trained on the given texts; ids below 151643 past the trained ones are filler
tokens over the byte-level alphabet, so any id decodes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

VOCAB_SIZE = 151_936  # embedding rows (the tokenizer has 151,665 tokens; the rest is padding)
FIRST_SPECIAL = 151_643
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_k": 1,
    "top_p": 0.001,
}


def chat_template() -> str:
    """The Qwen2.5-VL-Instruct chat template (TRL's copy of the original)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja").read_text()


def build_tokenizer(texts: Iterable[str], merges_vocab: int = 2000) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts`` (``merges_vocab`` tokens), padded with filler tokens
    to id 151642, then Qwen2.5's special tokens at their real ids."""
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=merges_vocab,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    trained.train_from_iterator(texts, trainer=trainer)
    model = trained.model
    vocab = dict(trained.get_vocab())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _merges(model)]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    fillers = ("".join(p) for p in itertools.product(alphabet, repeat=3))
    for word in fillers:
        if len(vocab) == FIRST_SPECIAL:
            break
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        padding_side="right",
    )
    fast.chat_template = chat_template()
    ids = [fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(FIRST_SPECIAL, FIRST_SPECIAL + len(SPECIAL_TOKENS))), ids
    return fast


def _merges(model) -> list:
    import json

    return json.loads(Tokenizer(model).to_str())["model"]["merges"]


def build_qwen25_vl(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    vision_depth: int = 2,
    vision_hidden: int = 32,
    seed: int = 0,
) -> Path:
    """Build and save (safetensors + processor + generation_config) the model."""
    tokenizer = build_tokenizer(texts)
    template = chat_template()
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
        chat_template=template,
    )
    half = hidden_size // num_heads // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB_SIZE,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=1,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_heads=2,
            out_hidden_size=hidden_size,
            fullatt_block_indexes=[vision_depth - 1],
            window_size=112,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    for key, value in GENERATION_CONFIG.items():
        setattr(model.generation_config, key, value)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
