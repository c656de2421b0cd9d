"""rft's acceptance test: full credit from every reward term of weight > 0, in the answer
format each sample asks for."""

from mmrpt.masking.samples import MaskedSample
from mmrpt.rl.rft import accepted


def sample(think: bool) -> MaskedSample:
    return MaskedSample(
        id="s",
        image="s.png",
        caption="A red circle.",
        masked_caption="A [1] circle.",
        targets=["red"],
        spans=[(2, 5)],
        sentences=[0],
        labels=[1],
        scores=[1.0],
        meta={},
        prompt="Fill in.",
        think=think,
    )


def test_short_completions_are_accepted_in_the_short_format():
    short, long = "<answer>[1] red</answer>", "<think>look</think><answer>[1] red</answer>"
    weights = {"format": 1.0, "exact": 1.0}
    # short format: the think block is optional (rewards.parse); long format: required
    assert accepted([short, long], [sample(False)] * 2, weights) == [True, True]
    assert accepted([short, long], [sample(True)] * 2, weights) == [False, True]


def test_a_wrong_answer_or_a_term_of_weight_zero():
    ok, wrong = "<answer>[1] red</answer>", "<answer>[1] blue</answer>"
    assert accepted([ok, wrong], [sample(False)] * 2, {"format": 1.0, "exact": 1.0}) == [
        True,
        False,
    ]
    # exact at weight 0 is not a condition
    assert accepted([wrong], [sample(False)], {"format": 1.0, "exact": 0.0}) == [True]
