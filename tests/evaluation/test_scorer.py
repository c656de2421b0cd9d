import pytest
import torch
from PIL import Image

from mmrpt.data.world import BACKGROUND
from mmrpt.evaluation.scorer import (
    Query,
    Scorer,
    blank_image,
    brute_force_option_scores,
    load_image,
)
from mmrpt.generation import generate
from mmrpt.modeling.encode import chat_prompt
from tests.evaluation.conftest import read_probes


@pytest.fixture(scope="module")
def scorer(tiny) -> Scorer:
    return Scorer.load(tiny.model, device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def queries(tiny) -> list[Query]:
    """Probes of several scenes (up to five share an image), plus one extra-long question so
    prompts of one batch differ in length."""
    probes = read_probes(tiny.data, "test_iid")[:14]
    qs = [
        Query(load_image(str(tiny.data / p["image"])), p["question"], tuple(p["choices"]))
        for p in probes
    ]
    long = "Look carefully at every part of the picture. " * 3 + probes[0]["question"]
    return [*qs, Query(qs[0].image, long, ("red", "top left", "left of"))]


def test_prompt_encoding_equals_the_processor(scorer, queries):
    enc = scorer._encode_prompts(queries)
    for q, ids, mm, u in zip(queries, enc["ids"], enc["mm"], enc["row_image"], strict=True):
        ref = scorer.processor(
            text=[chat_prompt(scorer.processor, q.question)], images=[q.image], return_tensors="pt"
        )
        assert ids == ref["input_ids"][0].tolist()
        assert mm == ref["mm_token_type_ids"][0].tolist()
        torch.testing.assert_close(enc["pixels"][u], ref["pixel_values"])
        torch.testing.assert_close(enc["grid"][u], ref["image_grid_thw"][0])
    assert len(enc["pixels"]) == len({id(q.image) for q in queries}) < len(queries)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_option_scores_equal_one_full_forward_per_option(scorer, queries, padding_side):
    fast = scorer.score_options(queries)
    for q, got in zip(queries, fast, strict=True):
        ref = brute_force_option_scores(scorer.model, scorer.processor, q, padding_side)
        assert [g for _, g in got] == [g for _, g in ref]
        torch.testing.assert_close(
            torch.tensor([s for s, _ in got]),
            torch.tensor([s for s, _ in ref]),
            atol=1e-4,
            rtol=1e-5,
        )


def test_scores_do_not_depend_on_batching(scorer, queries):
    alone = Scorer(scorer.model, scorer.processor, batch_size=1).score_options(queries)
    together = scorer.score_options(queries)
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=1e-5)


def test_greedy_answers_equal_hf_generate(scorer, queries):
    ours = scorer.answer(queries)
    ref = generate(
        scorer.model,
        scorer.processor,
        [q.image for q in queries],
        [q.question for q in queries],
        scorer.max_new_tokens,
    )
    assert ours == [r.strip() for r in ref]
    assert Scorer(scorer.model, scorer.processor, batch_size=3).answer(queries) == ours


def test_blank_image_is_plain_background_of_the_same_size():
    img = Image.new("RGB", (112, 84), (10, 200, 30))
    blank = blank_image(img)
    assert blank.size == img.size and blank.getcolors() == [(112 * 84, BACKGROUND)]
    assert blank_image(Image.new("RGB", (112, 84))) is blank  # one object per size
