"""pass@k of a fill-in policy: the estimator, the per-blank summary, the sampling path."""

import json
from itertools import combinations

import pytest
import torch

from mmrpt.cli import main as cli
from mmrpt.generation import generate
from mmrpt.images import open_rgb
from mmrpt.masking.samples import write_samples
from mmrpt.rl.passk import paired, pass_at_k, summarise
from mmrpt.rl.rewards import blank_hits


def main(args):
    return cli(["passk", *args])


class S:  # the fields summarise reads of a masked sample
    def __init__(self, targets, labels, think=True):
        self.targets, self.labels, self.think = targets, labels, think


@pytest.mark.parametrize("n", [1, 3, 6])
def test_pass_at_k_is_the_chance_that_a_k_subset_holds_a_right_sample(n):
    for c in range(n + 1):
        right = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(combinations(right, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(map(any, subsets)) / len(subsets))


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_blank_hits_per_placeholder():
    targets = ["There are two objects.", "A red circle is at the top left."]
    assert blank_hits(
        "<think>x</think><answer>[1] there are two objects "
        "[2] A red circle is at the top right.</answer>",
        targets,
    ) == [True, False]
    assert blank_hits("[1] There are two objects.", targets) == [False, False]  # no tags
    assert blank_hits(
        "<think></think><answer>[2] A red circle is at the top left.</answer>", targets
    ) == [False, True]
    assert blank_hits("<think></think><answer>[1] </answer>", [""]) == [False]


def answer(*texts):
    return (
        "<think>t</think><answer>"
        + " ".join(f"[{i}] {t}" for i, t in enumerate(texts, 1))
        + "</answer>"
    )


def test_summarise_counts_blanks_by_label():
    samples = [S(["A.", "B."], [1, 0]), S(["C."], [1])]
    greedy = [answer("A.", "x"), answer("x")]
    sampled = [
        answer("A.", "B."),
        answer("x", "x"),
        answer("A.", "x"),
        answer("A.", "x"),
        answer("x"),
        answer("x"),
        answer("x"),
        answer("C."),
    ]
    out = summarise(samples, greedy, sampled, n=4, ks=(1, 2, 4, 8))
    assert "pass@8" not in out["all"]
    one, zero = out["label_1"], out["label_0"]
    assert one["blanks"] == 2 and zero["blanks"] == 1
    assert one["greedy_exact_match"] == 0.5 and zero["greedy_exact_match"] == 0.0
    assert one["sampled_exact_match"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert one["pass@1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert one["pass@2"] == pytest.approx((pass_at_k(4, 3, 2) + pass_at_k(4, 1, 2)) / 2)
    assert one["pass@4"] == 1.0 and zero["pass@4"] == 1.0
    assert one["greedy_wrong"] == 1 and one["greedy_wrong_reachable"] == 1.0
    assert out["all"]["blanks"] == 3 and out["all"]["greedy_wrong"] == 2
    with pytest.raises(ValueError, match="4 sampled"):
        summarise(samples, greedy, sampled[:-1], n=4)
    three = summarise(samples[1:], greedy[1:], sampled[4:7], n=3)
    assert three["all"]["pass@3"] == 0.0 and "pass@4" not in three["all"]
    with pytest.raises(ValueError):  # a label per blank, or none
        summarise([S(["A.", "B."], [1])], greedy[:1], sampled[:4], n=4)


def test_paired_difference_and_its_standard_error():
    out = paired([1, 0.5, 1, 0], [0, 0.5, 1, 1])
    assert out["difference"] == pytest.approx(0.0)
    assert out["stderr"] == pytest.approx(0.4082, abs=1e-4)  # std([1, 0, 0, -1]) / 2
    assert (out["better"], out["worse"]) == (1, 1)
    assert out["exact_match"] == 0.625 and out["baseline_exact_match"] == 0.625
    with pytest.raises(ValueError):
        paired([1, 0], [1])


def test_sampled_completions_come_grouped_per_prompt(tiny_rl):
    """With a near-zero temperature every sample is the prompt's greedy completion, so the
    n samples of prompt j sit at j*n..(j+1)*n."""
    model, processor, samples, root = tiny_rl
    torch.manual_seed(0)
    with torch.no_grad():  # untrained weights answer every prompt alike; make them differ
        for p in model.parameters():
            p.normal_(0, 1.0)
    images = [open_rgb(root / s.image) for s in samples[:3]]
    prompts = [s.prompt for s in samples[:3]]
    greedy = generate(model, processor, images, prompts, 12)
    assert len(set(greedy)) > 1  # the check below needs distinct prompts' outputs
    torch.manual_seed(0)
    sampled = generate(
        model, processor, images, prompts, 12, batch_size=2, temperature=1e-4, num_samples=3
    )
    assert sampled == [g for g in greedy for _ in range(3)]
    hot = generate(model, processor, images, prompts, 12, temperature=5.0, num_samples=3)
    assert hot != sampled
    with pytest.raises(ValueError, match="temperature"):
        generate(model, processor, images, prompts, 12, num_samples=3)


def test_cli_writes_the_summary(tiny_rl, tmp_path, capsys):
    model, processor, samples, root = tiny_rl
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    path = tmp_path / "s.jsonl"
    write_samples(path, samples[:2])
    out = tmp_path / "passk.json"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "m"),
                "--samples",
                str(path),
                "--root",
                str(root),
                "-n",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["samples"] == 2 and result["n"] == 2
    assert result["all"]["blanks"] == sum(len(s.targets) for s in samples[:2])
    assert set(result["all"]) >= {"pass@1", "pass@2", "greedy_exact_match"}
    assert "paired" not in result
    assert (
        main(
            [
                "--model",
                str(tmp_path / "m"),
                "--samples",
                str(path),
                "--root",
                str(root),
                "-n",
                "1",
                "--baseline",
                str(tmp_path / "m"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    same = json.loads(out.read_text())["paired"]
    assert same["difference"] == 0 and same["better"] == same["worse"] == 0
    assert main(["--model", str(tmp_path / "nowhere"), "--samples", str(path)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert (
        main(
            [
                "--model",
                str(tmp_path / "m"),
                "--samples",
                str(path),
                "--baseline",
                str(tmp_path / "gone"),
            ]
        )
        == 2
    )
    assert "gone" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["--model", str(tmp_path / "m"), "--samples", str(tmp_path / "empty.jsonl")]) == 2
    assert "0 samples" in capsys.readouterr().err
    assert (
        main(
            [
                "--model",
                str(tmp_path / "m"),
                "--samples",
                str(path),
                "--root",
                str(tmp_path / "no_images"),
            ]
        )
        == 2
    )
    assert "FileNotFoundError" in capsys.readouterr().err
