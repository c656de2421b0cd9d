import numpy as np
import pytest

from mmrpt.masking.samples import format_answer, mask_caption
from mmrpt.masking.select import caption_tau, select_by_label, select_by_score, select_random

NAN = float("nan")


@pytest.mark.parametrize(
    "scores, k, max_masks, expected",
    [
        ([0.1, 0.9, 0.2, 0.8], 0.5, 2, [1, 3]),  # mean .5, std .35 -> tau .675
        ([0.1, 0.9, 0.2, 0.8], 0.5, 1, [1]),  # highest first
        ([0.1, 0.9, 0.2, 0.8], 2.0, 2, []),  # nothing clears tau
        ([0.5, 0.5], 0.0, 2, [0]),  # never hide every sentence
        ([0.7], 0.0, 2, []),  # one sentence: nothing to hide
        ([NAN, 0.9, 0.1], 0.5, 2, [1]),  # unscored sentences are never chosen
    ],
)
def test_select_by_score(scores, k, max_masks, expected):
    s = np.array(scores)
    assert select_by_score(s, caption_tau(s, k), max_masks) == expected


def test_caption_tau_is_mean_plus_k_std():
    s = np.array([1.0, 2.0, 3.0, 6.0])
    assert caption_tau(s, 1.0) == pytest.approx(s.mean() + s.std())


def test_random_and_label_selectors():
    rng = np.random.default_rng(0)
    picks = [tuple(select_random(5, 2, rng)) for _ in range(200)]
    assert all(len(p) == 2 and len(set(p)) == 2 for p in picks)
    assert len(set(picks)) == 10  # every pair of 5 shows up
    assert select_random(1, 1, rng) == []
    assert set(select_by_label([0, 1, 0, 1, 1], 3, rng)) <= {1, 3, 4}
    assert select_by_label([0, 0, 0], 2, rng) == []


def test_mask_caption_and_answer():
    caption = "A photo. There is a red circle. It is large."
    masked, targets = mask_caption(caption, [(32, 44), (9, 31)])
    assert masked == "A photo. [1] [2]"
    assert targets == ["There is a red circle.", "It is large."]
    assert format_answer(targets) == "[1] There is a red circle. [2] It is large."
    with pytest.raises(ValueError, match="overlapping"):
        mask_caption(caption, [(0, 10), (5, 12)])


CAPTION = (
    "There are three objects. A large green triangle is at the top right. A large green "
    "triangle is at the middle center. A large red circle is at the bottom center. The green "
    "triangle is right of the red circle."
)


def test_hidden_mentions_share_the_blank_and_the_text_no_longer_gives_it_away():
    from mmrpt.data.records import Record, split_at_punctuation
    from mmrpt.masking.samples import MaskedSample
    from mmrpt.stages.mask import colour_mentions

    circle = CAPTION.index("red circle is")
    red = (circle, circle + 3)
    mentions = colour_mentions(CAPTION, [red])
    assert mentions == [(CAPTION.rindex("red"), CAPTION.rindex("red") + 3, 0)]
    masked, targets = mask_caption(CAPTION, [red], mentions)
    assert targets == ["red"] and "red" not in masked
    assert masked.endswith(
        "A large [1] circle is at the bottom center. The green triangle is right of the [1] circle."
    )

    second = CAPTION.index("green triangle is at the middle")
    green = (second, second + 5)
    record = Record("r", "r.png", CAPTION, split_at_punctuation(CAPTION), {})
    s = MaskedSample.build(
        record, [green], [2], [1.0], "Fill in.", mentions=colour_mentions(CAPTION, [green])
    )
    assert s.masked_caption.count("[1]") == 3 and "green" not in s.masked_caption
    assert s.occurrence == [1]  # the second [1] is the hidden word, the others mentions
    assert s.targets == ["green"]
    again = MaskedSample.from_dict(__import__("json").loads(s.to_json()))
    assert again == s and again.occurrence == [1]
    plain = MaskedSample.build(record, [green], [2], [1.0], "Fill in.")
    assert "mentions" not in plain.to_json() and plain.occurrence == [0]
    assert "green triangle" in plain.masked_caption  # what hide_mentions is for


def test_hide_mentions_needs_attribute_masks():
    from mmrpt.config import Params

    with pytest.raises(ValueError, match="hide_mentions needs mask.granularity"):
        Params.model_validate({"mask": {"hide_mentions": True}})
    Params.model_validate({"mask": {"hide_mentions": True, "granularity": "attribute"}})
