import numpy as np
import pytest
from scipy import stats

from mmrpt.report.stats import (
    mcnemar,
    mde,
    paired_difference,
    seed_change,
    seed_level,
    verdict,
)

Z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.8}: alpha 0.05, power 0.8


def paired_binary(
    rng: np.random.Generator, n: int, both: float, neither: float, a_only: float, b_only: float
) -> tuple[np.ndarray, np.ndarray]:
    """n paired 0/1 outcomes drawn with the given cell probabilities of the 2x2 table."""
    cell = rng.choice(4, size=n, p=[both, neither, a_only, b_only])
    return np.isin(cell, (0, 2)).astype(int), np.isin(cell, (0, 3)).astype(int)


def from_counts(a_only: int, b_only: int, both: int = 0, neither: int = 0):
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return np.array(a), np.array(b)


def test_simulated_effect_of_a_tenth_is_detected_and_covered():
    # P(A right) = 0.45 + 0.15 = 0.60, P(B right) = 0.45 + 0.05 = 0.50: true difference +0.10
    a, b = paired_binary(np.random.default_rng(0), 2000, 0.45, 0.35, 0.15, 0.05)
    d = paired_difference(a, b)
    assert d["n"] == 2000 and d["n_clusters"] == 1
    assert d["diff"] == pytest.approx((a - b).mean())
    assert d["lo"] > 0 and d["lo"] < 0.10 < d["hi"]
    # the bootstrap SE is the textbook SE of a mean, sd(a - b) / sqrt(n)
    assert d["se"] == pytest.approx(np.std(a - b) / np.sqrt(2000), rel=0.05)
    assert verdict(d, 0.03).startswith(f"effect detected ({d['diff']:+.3f}, 95% CI [")
    assert mcnemar(a, b)["p_value"] < 1e-10


def test_null_is_not_detected_in_most_simulations():
    # Same distribution for both arms (10% discordant each way), 400 items, 200 simulations:
    # 197 of 200 are "no effect detected" (98.5%; 1,000 simulations gave 95.6%, the nominal
    # 95% at this n). The assertion leaves room for the binomial spread of 200 runs.
    rng = np.random.default_rng(1)
    detected = 0
    for i in range(200):
        a, b = paired_binary(rng, 400, 0.4, 0.4, 0.1, 0.1)
        d = paired_difference(a, b, n_boot=1000, seed=i)
        detected += verdict(d, 0.1).startswith("effect detected")
    assert 1 - detected / 200 >= 0.93


@pytest.mark.parametrize(
    ("a_only", "b_only", "both", "neither", "p"),
    [
        (8, 2, 5, 5, 2 * (1 + 10 + 45) / 2**10),  # 2 * P(X <= 2), X ~ Bin(10, 1/2)
        (2, 8, 0, 0, 2 * (1 + 10 + 45) / 2**10),  # symmetric
        (6, 1, 30, 0, 2 * (1 + 7) / 2**7),
        (10, 0, 0, 3, 2 / 2**10),
        (5, 5, 7, 7, 1.0),
        (0, 0, 4, 6, 1.0),  # no discordant pair: no evidence either way
    ],
)
def test_mcnemar_exact_binomial(a_only, b_only, both, neither, p):
    a, b = from_counts(a_only, b_only, both, neither)
    out = mcnemar(a, b)
    assert (out["a_only"], out["b_only"], out["discordant"]) == (a_only, b_only, a_only + b_only)
    assert out["p_value"] == pytest.approx(p, rel=1e-9)


def test_mcnemar_rejects_non_binary_and_unpaired():
    with pytest.raises(ValueError, match="binary"):
        mcnemar([0.5, 1], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        mcnemar([0, 1, 1], [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(n=2000, p_discordant=0.2), Z * np.sqrt(0.2 / 2000)),  # = 2.8016 * 0.01
        (dict(n=100, sd_diff=0.5), Z * 0.05),
        (dict(n=100, sd_diff=0.5, power=0.5), 1.959963984540054 * 0.05),  # z_{0.5} = 0
        (dict(n=400, sd_diff=1.0, alpha=0.10), (1.6448536269514722 + 0.8416212335729143) / 20),
    ],
)
def test_mde_normal_approximation(kwargs, expected):
    assert mde(**kwargs) == pytest.approx(expected, rel=1e-9)


def test_mde_shrinks_as_one_over_sqrt_n():
    assert mde(2000, p_discordant=0.2) == pytest.approx(0.0280159, abs=1e-7)
    for n in (50, 500, 2000):
        assert mde(4 * n, sd_diff=0.4) == pytest.approx(mde(n, sd_diff=0.4) / 2, rel=1e-12)
        assert mde(100 * n, p_discordant=0.3) == pytest.approx(
            mde(n, p_discordant=0.3) / 10, rel=1e-12
        )


def test_mde_needs_exactly_one_spread():
    with pytest.raises(ValueError, match="exactly one"):
        mde(100)
    with pytest.raises(ValueError, match="exactly one"):
        mde(100, sd_diff=0.3, p_discordant=0.1)


def test_hand_case_and_degenerate_difference():
    d = paired_difference([1, 1, 0, 1, 0], [0, 1, 0, 0, 1])  # differences 1, 0, 0, 1, -1
    assert d["diff"] == pytest.approx(0.2) and d["n"] == 5
    assert d["se"] == pytest.approx(np.sqrt(0.56 / 5), rel=0.05)  # population var of d = 0.56
    same = paired_difference(np.ones(30), np.zeros(30))  # every item differs by exactly 1
    assert (same["diff"], same["lo"], same["hi"], same["se"]) == (1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="clusters"):
        paired_difference([1, 0], [0, 0], clusters=[0])


def test_cluster_bootstrap_is_wider_when_clusters_differ():
    # four seeds whose mean differences are 0.00, 0.05, 0.10, 0.15 (500 probes each)
    rng = np.random.default_rng(2)
    parts = [
        paired_binary(rng, 500, 0.4, 0.4, 0.1 + s / 2, 0.1 - s / 2) for s in (0.0, 0.05, 0.10, 0.15)
    ]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    seeds = np.repeat(np.arange(4), 500)
    items = paired_difference(a, b)
    clustered = paired_difference(a, b, clusters=seeds)
    assert clustered["diff"] == items["diff"] and clustered["n_clusters"] == 4
    assert clustered["hi"] - clustered["lo"] > 2 * (items["hi"] - items["lo"])
    # two-level variance: (population var of the seed means + mean within var / 500) / 4
    d = (a - b).reshape(4, 500)
    expected = np.sqrt((d.mean(1).var() + (d.var(1) / 500).mean()) / 4)
    assert clustered["se"] == pytest.approx(expected, rel=0.05)
    assert items["se"] == pytest.approx(np.std(a - b) / np.sqrt(2000), rel=0.05)


@pytest.mark.parametrize(
    ("diff", "text"),
    [
        (dict(diff=0.071, lo=0.032, hi=0.110), "effect detected (+0.071, 95% CI [+0.032, +0.110])"),
        (dict(diff=-0.05, lo=-0.09, hi=-0.01), "effect detected (-0.050, 95% CI [-0.090, -0.010])"),
        (dict(diff=0.02, lo=-0.01, hi=0.05), "no effect detected (MDE 0.045)"),
        (dict(diff=0.0, lo=0.0, hi=0.04), "no effect detected (MDE 0.045)"),  # touching 0
    ],
)
def test_verdict(diff, text):
    assert verdict(diff, 0.045) == text


def test_identical_outcomes_say_so_instead_of_a_zero_mde():
    d = {"diff": 0.0, "lo": 0.0, "hi": 0.0, "se": 0.0}
    assert verdict(d, 0.0) == "no difference at all (zero spread: MDE undefined)"
    assert verdict({**d, "se": 0.01, "lo": -0.02, "hi": 0.02}, 0.03).startswith(
        "no effect detected (MDE 0.030)"
    )


def test_one_seed_says_its_interval_leaves_out_seed_variance():
    rng = np.random.default_rng(3)
    a, b = rng.random(800) < 0.6, rng.random(800) < 0.4
    d = paired_difference(a, b, clusters=np.zeros(800, int), n_boot=300)
    assert d["n_clusters"] == 1
    assert verdict(d, 0.03).endswith("; one seed: the interval leaves out seed-to-seed variance)")
    d = paired_difference(a, b, clusters=np.arange(800) % 2, n_boot=300)
    assert "one seed" not in verdict(d, 0.03)
    assert verdict(d, 0.03).endswith(
        "; 2 seeds: a bootstrap over so few understates seed-to-seed variance)"
    )
    d = paired_difference(a, b, clusters=np.arange(800) % 4, n_boot=300)
    assert verdict(d, 0.03).endswith("])")  # four seeds: no caveat


def test_seed_level_hand_case():
    # differences 0.1..0.4: mean 0.25, sd 0.1291, t_{0.975, 3} = 3.1824
    s = seed_level([0.1, 0.2, 0.3, 0.4])
    sd = np.std([0.1, 0.2, 0.3, 0.4], ddof=1)
    assert s["diff"] == pytest.approx(0.25) and s["sd"] == pytest.approx(sd)
    assert (s["lo"], s["hi"]) == pytest.approx(
        (0.25 - 3.1824 * sd / 2, 0.25 + 3.1824 * sd / 2), abs=1e-4
    )
    assert s["sign_test_p"] == pytest.approx(0.125)  # 4 of 4 positive
    # t quantiles, 3 degrees of freedom: t_{0.975} + t_{0.8} = 3.1824 + 0.9785
    assert s["mde"] == pytest.approx((3.1824 + 0.9785) * sd / 2, abs=1e-4)
    assert s["seeds_for_target"] == 55  # the first k with (t_.975 + t_.8)(k-1) sd/sqrt(k) <= 0.05
    # a percentile bootstrap over 4 seeds is narrower than the t interval (why t is the verdict)
    assert s["boot_hi"] - s["boot_lo"] < s["hi"] - s["lo"]
    ties = seed_level([0.1, -0.05, 0.0, 0.2])  # a tie is dropped: 2 of 3 positive
    assert ties["sign_test_p"] == pytest.approx(1.0) and ties["n_seeds"] == 4
    with pytest.raises(ValueError, match=">= 2 seeds"):
        seed_level([0.1])


def test_seed_level_detects_a_simulated_effect_and_not_a_null():
    # per-seed differences with sd 0.05: a true +0.05 over 30 seeds (MDE 2.8 * 0.05 / sqrt(30)
    # = 0.026) is detected in most draws; a null is detected in about 5% of them
    rng = np.random.default_rng(4)
    hits = [seed_level(rng.normal(0.05, 0.05, 30), n_boot=200)["lo"] > 0 for _ in range(200)]
    nulls = [seed_level(rng.normal(0.0, 0.05, 30), n_boot=200) for _ in range(200)]
    assert sum(hits) >= 190  # power at 1.9 MDE: ~0.999
    false = sum(n["lo"] > 0 or n["hi"] < 0 for n in nulls)
    assert false <= 20  # nominal 10 of 200; the bound leaves the binomial spread
    assert verdict(nulls[0], nulls[0]["mde"]) == f"no effect detected (MDE {nulls[0]['mde']:.3f})"


def test_seed_change_is_welch_over_the_per_seed_differences():
    a, b = [0.10, 0.20, 0.30, 0.40, 0.25], [0.0, 0.05, -0.05, 0.02]
    c = seed_change(a, b)
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 3)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert c["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert c["df"] == pytest.approx(df) and c["n_seeds"] == 4
    assert (c["lo"], c["hi"]) == pytest.approx((c["diff"] - half, c["diff"] + half))
    assert c["mde"] == pytest.approx(
        (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * np.sqrt(va + vb)
    )
    t = c["diff"] / np.sqrt(va + vb)
    assert c["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))  # two-sided
    assert verdict(c, c["mde"]).startswith("effect detected (+0.245")
    assert (c["n_bias"], c["n_control"]) == (5, 4)
    # one side flat: Welch's df is the other side's n - 1, the interval finite
    one = seed_change([0.25, 0.25, 0.25], b)
    assert one["df"] == pytest.approx(3.0) and one["lo"] < one["hi"] and not one["zero_spread"]
    # both flat (equal in exact arithmetic, not in float): no test, whatever the difference
    k = np.arange(20, 24)
    flat = seed_change(k / 200 - (k - 20) / 200, [0.0, 0.0])
    assert flat["zero_spread"] and flat["mde"] is None and flat["p"] is None
    assert verdict(flat, flat["mde"]) == (
        "zero spread over seeds (difference +0.100): no test, MDE undefined"
    )
    with pytest.raises(ValueError, match=">= 2 seeds on each side"):
        seed_change([0.1], [0.0, 0.1])


def test_seed_level_with_no_spread_runs_no_test():
    k = np.arange(20, 24)  # 0.1 at every seed, up to float rounding
    s = seed_level(k / 200 - (k - 20) / 200)
    assert s["zero_spread"] and s["sd"] == 0.0 and s["mde"] == 0.0
    assert verdict(s, s["mde"]).startswith("zero spread over seeds (difference +0.100)")
    assert not seed_level([0.1, 0.2])["zero_spread"]


def test_seed_change_detects_a_simulated_change_and_not_a_null():
    # 8 seeds a side, sd 0.05: MDE ~ (2.15 + 0.87) * 0.05 * sqrt(2 / 8) = 0.075; a true 0.15
    # (2 MDE) is detected in nearly every draw, a null in about 5%
    rng = np.random.default_rng(6)
    hits = [seed_change(rng.normal(0.15, 0.05, 8), rng.normal(0, 0.05, 8)) for _ in range(200)]
    nulls = [seed_change(rng.normal(0, 0.05, 8), rng.normal(0, 0.05, 8)) for _ in range(200)]
    assert sum(h["lo"] > 0 for h in hits) >= 190
    assert 0.06 < np.mean([h["mde"] for h in hits]) < 0.09
    assert sum(n["lo"] > 0 or n["hi"] < 0 for n in nulls) <= 20  # nominal 10 of 200
