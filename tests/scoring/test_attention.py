"""The fast D_vis path against a brute-force computation from full eager attentions."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmrpt.data import world
from mmrpt.modeling.encode import collate, encode, sentence_of_tokens
from mmrpt.modeling.loader import image_token_id
from mmrpt.modeling.tiny import TinySpec, build_model, build_processor, train_tokenizer
from mmrpt.scoring.attention import capture
from mmrpt.scoring.sentences import attention_scores, key_masks

CAPTIONS = [
    "Here is a rendered image. There are two objects. A small red circle is at the top.",
    "There is one object. Blue is a cool colour.",
    "A large green square is at the bottom left. Circles have no corners. It was made.",
]


@pytest.fixture(scope="module")
def tiny():
    tok = train_tokenizer(CAPTIONS + world.vocabulary_text(), 400)
    spec = TinySpec(
        vocab_size=400,
        hidden_size=64,
        intermediate_size=96,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        vision_depth=1,
        vision_embed_dim=16,
        vision_heads=2,
    )
    model = build_model(spec, tok, seed=1).eval()
    return model, build_processor(tok, 112)


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in CAPTIONS]


def spans_of(caption):
    from mmrpt.data.records import split_sentences

    return [(s.start, s.end) for s in split_sentences(caption)]


@pytest.mark.parametrize(
    "text_keys", [("caption",), ("prompt", "caption"), ("sink", "prompt", "caption")]
)
@pytest.mark.parametrize(
    "layers, heads", [((2, 3), None), ((1,), (0, 3)), ((0, 3), {0: [1], 3: [0, 2]})]
)
def test_fast_path_matches_brute_force(tiny, text_keys, layers, heads):
    model, processor = tiny
    spans = [spans_of(c) for c in CAPTIONS]
    imgs = images()
    with capture(model, layers, heads) as cap:
        fast = attention_scores(
            model,
            processor,
            cap,
            imgs,
            CAPTIONS,
            spans,
            "Describe the image.",
            image_token_id(model),
            text_keys,
        )

    # brute force: eager attention everywhere, all layers' full weights
    encs = [
        encode(processor, im, "Describe the image.", c)
        for im, c in zip(imgs, CAPTIONS, strict=True)
    ]
    batch = collate(encs, processor.tokenizer.pad_token_id)
    batch.pop("labels")
    image_keys, text_mask = key_masks(
        encs, batch["input_ids"].shape[1], image_token_id(model), text_keys
    )
    text_cfg = model.config.get_text_config()
    prev = text_cfg._attn_implementation
    text_cfg._attn_implementation = "eager"
    try:
        with torch.no_grad():
            attn = model(**batch, output_attentions=True).attentions
    finally:
        text_cfg._attn_implementation = prev
    for b, e in enumerate(encs):
        sent = sentence_of_tokens(e.offsets, spans[b])
        for s in range(len(spans[b])):
            per_layer = []
            for layer in layers:
                w = attn[layer][b]  # (H, T, T)
                if isinstance(heads, dict):
                    w = w[heads[layer]]
                elif heads is not None:
                    w = w[list(heads)]
                vals = []
                for k, sk in enumerate(sent):
                    if sk != s:
                        continue
                    t = e.target_start + k
                    img = w[:, t, image_keys[b]].sum(-1)
                    txt = w[:, t, text_mask[b]].sum(-1)
                    vals.append((img / (img + txt)).mean().item())
                per_layer.append(np.mean(vals))
            np.testing.assert_allclose(fast[b][0][:, s], per_layer, atol=1e-5, rtol=0)


def test_layers_out_of_range_fail(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="out of range"), capture(model, [7]):
        pass


def test_per_head_capture_is_the_heads_of_the_mean(tiny):
    model, processor = tiny
    spans = [spans_of(c) for c in CAPTIONS]
    args = (
        images(),
        CAPTIONS,
        spans,
        "Describe the image.",
        image_token_id(model),
        ("prompt", "caption"),
    )
    with capture(model, (1, 2)) as cap:
        mean = attention_scores(model, processor, cap, *args)
    with capture(model, (1, 2), per_head=True) as cap:
        per_head = attention_scores(model, processor, cap, *args)
    for (m, _), (h, _) in zip(mean, per_head, strict=True):
        assert h.shape[0] == 2 * 4
        np.testing.assert_allclose(h.reshape(2, 4, -1).mean(1), m, atol=1e-6)


def test_counterfactual_reduce_is_over_replacements(tiny):
    from mmrpt.modeling.lm import sentence_losses
    from mmrpt.scoring.sentences import counterfactual_scores

    model, processor = tiny
    imgs, spans = images(), [spans_of(c) for c in CAPTIONS]
    others = [imgs[1:] + imgs[:1], imgs[2:] + imgs[:2]]
    true = sentence_losses(model, processor, imgs, CAPTIONS, spans, "Describe.", 8)
    rises = []
    for swap in others:
        alt = sentence_losses(model, processor, swap, CAPTIONS, spans, "Describe.", 8)
        rises.append([(a[:, 0] - t[:, 0]) / t[:, 1] for a, t in zip(alt, true, strict=True)])
    for reduce, fn in (("mean", np.mean), ("max", np.max)):
        got = counterfactual_scores(
            model, processor, imgs, others, CAPTIONS, spans, "Describe.", 8, reduce=reduce
        )
        for i, g in enumerate(got):
            np.testing.assert_allclose(g, fn([r[i] for r in rises], axis=0), rtol=1e-5)
