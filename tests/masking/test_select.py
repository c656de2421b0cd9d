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
