import torch
import torch.nn.functional as F
from PIL import Image

from mmrpt.modeling.encode import IGNORE, collate, encode, sentence_of_tokens, token_losses
from mmrpt.modeling.tiny import build_processor, train_tokenizer


def processor():
    tok = train_tokenizer(["There are two objects. A red circle is at the top left."] * 3, 300)
    return build_processor(tok, 56)


def test_encode_maps_target_tokens_to_sentences():
    p = processor()
    caption = "A red circle. It is small!  Two objects."
    spans = [(0, 13), (14, 26), (28, 40)]
    e = encode(p, Image.new("RGB", (56, 56)), "Describe.", caption)
    n_target = len(e.offsets)
    assert e.labels[: e.target_start] == [IGNORE] * e.target_start
    assert (
        e.labels[e.target_start : e.target_start + n_target]
        == e.input_ids[e.target_start : e.target_start + n_target]
    )
    assert p.tokenizer.decode(e.input_ids[e.target_start :]) == caption + "<|im_end|>"
    sent = sentence_of_tokens(e.offsets, spans)
    for k, (a, b) in enumerate(e.offsets):
        piece = caption[a:b].strip()
        if piece:
            assert piece in caption[spans[sent[k]][0] : spans[sent[k]][1]]
    assert sorted(set(sent) - {-1}) == [0, 1, 2]


def test_sentence_of_tokens_ignores_empty_and_unordered_spans():
    offsets = [(0, 3), (3, 4), (4, 9), (9, 10), (11, 15)]
    assert sentence_of_tokens(offsets, [(11, 16), (0, 10)]).tolist() == [1, 1, 1, 1, 0]
    assert sentence_of_tokens(offsets, [(0, 10), (5, 5), (0, 0)]).tolist() == [0, 0, 0, 0, -1]
    assert sentence_of_tokens(offsets, []).tolist() == [-1] * 5
    assert sentence_of_tokens([], [(0, 4)]).tolist() == []


def test_collate_pads_right_and_left():
    p = processor()
    img = Image.new("RGB", (56, 56))
    items = [encode(p, img, "Hi.", "A red circle."), encode(p, img, "Hi.", "Two.")]
    for side in ("right", "left"):
        b = collate(items, pad_id=0, padding_side=side)
        assert b["input_ids"].shape == b["labels"].shape == b["mm_token_type_ids"].shape
        short = b["attention_mask"][1]
        assert short.sum() == len(items[1].input_ids)
        assert (short[-1] == 0) if side == "right" else (short[0] == 0)
        assert b["pixel_values"].shape[0] == 2 * items[0].pixel_values.shape[0]


def test_token_losses_match_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, 3, 1, IGNORE, 2], [IGNORE, IGNORE, 6, 0, 5]])
    out = token_losses(logits, labels)
    assert out.shape == (2, 5)
    for b in range(2):
        for t in range(5):
            if labels[b, t] == IGNORE:
                assert out[b, t] == 0
            else:
                ref = F.cross_entropy(logits[b, t - 1][None], labels[b, t][None])
                torch.testing.assert_close(out[b, t], ref)


def test_target_losses_equal_full_logits_losses_in_any_chunking():
    from mmrpt.modeling.encode import target_losses
    from mmrpt.modeling.tiny import TinySpec, build_model

    p = processor()
    model = build_model(
        TinySpec(
            vocab_size=300,
            hidden_size=32,
            num_heads=2,
            num_kv_heads=1,
            intermediate_size=64,
            num_layers=2,
            vision_depth=1,
            vision_embed_dim=16,
            vision_heads=2,
        ),
        p.tokenizer,
    ).eval()
    encs = [
        encode(p, Image.new("RGB", (56, 84), (9 * i, 0, 0)), "Describe.", c)
        for i, c in enumerate(["A red circle.", "Two objects. A red circle is at the top left."])
    ]
    batch = collate(encs, p.tokenizer.pad_token_id)
    labels = batch.pop("labels")
    with torch.no_grad():
        want = token_losses(model(**batch).logits, labels)
        torch.testing.assert_close(target_losses(model, batch, labels), want, atol=0, rtol=0)
        for chunk in (1, 3):  # several chunks: float rounding of the head's matmul only
            got = target_losses(model, batch, labels, chunk)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert (want[labels == IGNORE] == 0).all() and (want[labels != IGNORE] > 0).all()


def test_the_cached_prompt_part_gives_what_the_processor_gives():
    import numpy as np

    from mmrpt.modeling import encode as module
    from tests.real_data import SIZES

    p = processor()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES * 2
    ]
    prompts = ("Describe the image.", "What colour?")
    for prompt in prompts:
        for img in images:  # the first of each grid runs the processor, the others reuse it
            got = module._encode_prompt(p, img, prompt)
            want = p(text=[module.chat_prompt(p, prompt)], images=[img], return_tensors="pt")
            for k in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
                assert torch.equal(got[k], want[k]), k
    grids = {
        tuple(p.image_processor(images=[i], return_tensors="pt")["image_grid_thw"][0].tolist())
        for i in images
    }
    assert len(grids) > 1 and set(module._prompt_ids[p]) == {(q, g) for q in prompts for g in grids}
    for k in range(module.PROMPT_CACHE + 5):  # a new question per probe: the cache stays bounded
        module._encode_prompt(p, images[0], f"Question {k}?")
    assert len(module._prompt_ids[p]) == module.PROMPT_CACHE


def test_a_processor_whose_image_part_differs_is_not_cached():
    from mmrpt.modeling import encode as module

    p = processor()

    class Odd(type(p)):  # the processor's pixels are not the image processor's alone
        def __call__(self, *args, **kwargs):
            out = super().__call__(*args, **kwargs)
            out["pixel_values"] = out["pixel_values"] + 1
            return out

    p.__class__ = Odd
    img = Image.new("RGB", (56, 56), "red")
    e = encode(p, img, "Hi.", "A red circle.")
    assert module._prompt_ids[p] is None  # so every later call takes the processor
    again = module._encode_prompt(p, img, "Hi.")
    want = p(text=[module.chat_prompt(p, "Hi.")], images=[img], return_tensors="pt")
    assert torch.equal(again["pixel_values"], want["pixel_values"])
    assert e.input_ids[: e.target_start] == want["input_ids"][0].tolist()
