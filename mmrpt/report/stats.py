"""Paired comparisons of two arms on the same probes: difference, interval, test, power.

The study compares arms (e.g. mmrpt vs masked_sft) on the same probes, over a few training
seeds, so every outcome has a partner: arm A's and arm B's answer to probe p at seed s. These
functions take the per-item outcomes as flat arrays (0/1 correctness or any score), aligned
item by item, and return plain dicts and floats for the report.

Why our own: no maintained library does a cluster bootstrap of paired differences over
seeds x probes together with a minimum detectable effect in one call (scipy.stats.bootstrap
resamples items only, statsmodels' McNemar has no clusters). scipy.stats supplies the exact
binomial (McNemar, the sign test), the normal and t quantiles (MDE) and Welch's t test.

Departures from the textbook:
- ``paired_difference`` with ``clusters`` is a two-level bootstrap (resample clusters with
  replacement, then items with replacement inside each drawn cluster). Davison & Hinkley
  (1997, sec. 3.8) note this counts the within-cluster variance twice, so its interval is a
  little conservative (too wide, never too narrow); with few clusters (3 seeds) the
  between-cluster part rests on 3 values, which is why the MDE is stated beside every verdict.
- The intervals are percentile intervals at 95% (fixed), not BCa.
- ``mde`` is the normal approximation of a two-sided paired test; for binary outcomes it uses
  the discordance rate as the variance of the differences (exact at a null difference of 0).
- ``seed_level`` is the conservative view over training seeds: one paired difference per
  seed, a t interval over them (and a percentile bootstrap over seeds, since the per-seed
  differences can be skewed), the sign test, and the seeds a target MDE would need; its MDE
  uses t quantiles with k - 1 degrees of freedom (with 4 seeds 1.5x the normal one). With few
  seeds the cluster bootstrap above rests on few values and comes out narrower (at bias 0.6,
  4 seeds: bootstrap [+0.033, +0.149] on 2 of them, t over the 4 [-0.052, +0.247];
  docs/LOG.md, 2026-12-02).
- ``seed_change`` is the seed-level view of a change between two separate trainings (a
  comparison's difference at a caption bias minus at bias 0): Welch's t over the two sets of
  per-seed differences, since the two sets come from different runs and may spread differently.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

LEVEL = 0.95  # the confidence level of every interval here
FEW_SEEDS = 4  # below this many clusters (seeds) a verdict says its interval is too narrow
FLAT = 1e-12  # a seed-level spread at most this is zero (equal differences differ in float)


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"a and b must be non-empty 1-d arrays of the same length, got shapes "
            f"{a.shape} and {b.shape}"
        )
    return a, b


def _boot_means(
    d: np.ndarray, clusters: np.ndarray | None, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot,) bootstrap means of the differences ``d`` (n,): items resampled, or clusters
    then items within each drawn cluster."""
    if clusters is None:
        return np.stack([d[rng.integers(0, d.size, d.size)].mean() for _ in range(n_boot)])
    groups = [d[clusters == c] for c in np.unique(clusters)]
    out = np.empty(n_boot)
    for i in range(n_boot):
        drawn = [groups[g] for g in rng.integers(0, len(groups), len(groups))]
        total = sum(x[rng.integers(0, x.size, x.size)].sum() for x in drawn)
        out[i] = total / sum(x.size for x in drawn)
    return out


def paired_difference(a, b, clusters=None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean difference mean(a - b) of paired outcomes with a 95% bootstrap interval.

    ``a``, ``b``: (n,) outcomes of arms A and B on the same n items (0/1 or floats), aligned.
    ``clusters``: (n,) optional labels (e.g. the training seed of each item); when given, the
    bootstrap resamples clusters, then items within them (see the module docstring).
    Returns {"diff", "lo", "hi", "se" (bootstrap standard error), "n", "n_clusters"}.
    """
    a, b = _paired(a, b)
    d = a - b
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != d.shape:
            raise ValueError(
                f"clusters must label every item: shape {clusters.shape}, items {d.shape}"
            )
    means = _boot_means(d, clusters, n_boot, np.random.default_rng(seed))
    tail = (1 - LEVEL) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return {
        "diff": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "se": float(means.std(ddof=1)),
        "n": int(d.size),
        "n_clusters": 1 if clusters is None else int(np.unique(clusters).size),
    }


def mcnemar(a, b) -> dict:
    """Exact McNemar test of paired binary outcomes (n,): under the null that both arms are
    equally good, the discordant pairs split 50/50, so the count where only A is right is
    Binomial(discordant, 1/2); two-sided p-value. Concordant pairs carry no information.
    Returns {"a_only", "b_only", "discordant", "p_value"} (p = 1 without discordant pairs)."""
    a, b = _paired(a, b)
    if not np.isin(a, (0, 1)).all() or not np.isin(b, (0, 1)).all():
        raise ValueError("mcnemar needs binary (0/1) outcomes")
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "discordant": n, "p_value": p}


def mde(
    n: int,
    sd_diff: float | None = None,
    p_discordant: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Minimum detectable effect of a paired comparison on ``n`` items: the true mean
    difference a two-sided level-``alpha`` test detects with probability ``power``,
    (z_{1-alpha/2} + z_{power}) * sd / sqrt(n). ``sd`` is ``sd_diff`` (the observed standard
    deviation of the per-item differences) or, for binary outcomes, sqrt(``p_discordant``)
    (the differences are +-1 on discordant pairs, 0 elsewhere). Give exactly one of the two."""
    if (sd_diff is None) == (p_discordant is None):
        raise ValueError("give exactly one of sd_diff and p_discordant")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sd = sd_diff if sd_diff is not None else np.sqrt(p_discordant)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * sd / np.sqrt(n))


def mde_seeds(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE of a one-sample t test over ``n`` per-seed differences of spread ``sd``:
    (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)."""
    t = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(t * sd / np.sqrt(n))


def seeds_for(sd: float, target: float) -> int:
    """The fewest seeds (>= 2) whose ``mde_seeds`` at spread ``sd`` is at most ``target``:
    counted up from the normal approximation's number (t quantiles only add seeds)."""
    k = max(2, int(np.ceil((mde(1, sd_diff=sd) / target) ** 2)))
    while mde_seeds(k, sd) > target:
        k += 1
    return k


def seed_level(per_seed, target: float = 0.05, n_boot: int = 10_000, seed: int = 0) -> dict:
    """The paired difference at the level of training seeds: ``per_seed`` (k,) one difference
    per seed (arm A's accuracy minus arm B's on the same probes), k >= 2. Returns {"diff" (the
    mean), "lo", "hi" (the 95% t interval over seeds), "boot_lo", "boot_hi" (a percentile
    bootstrap over seeds), "sign_test_p", "n_seeds", "sd", "mde" (at k seeds), "target",
    "seeds_for_target" (seeds for an MDE of ``target`` at this spread), "per_seed",
    "zero_spread"}. Every seed the same difference (``zero_spread``): no test; the verdict says
    so instead of reading the zero-width interval as an effect."""
    d = np.asarray(per_seed, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"need one difference per seed for >= 2 seeds, got shape {d.shape}")
    n, sd = d.size, float(d.std(ddof=1))
    flat = sd <= FLAT * max(1.0, abs(float(d.mean())))
    sd = 0.0 if flat else sd
    half = stats.t.ppf(1 - (1 - LEVEL) / 2, n - 1) * sd / np.sqrt(n)
    boot = d[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1 - LEVEL) / 2
    moved = int((d != 0).sum())
    return {
        "diff": float(d.mean()),
        "lo": float(d.mean() - half),
        "hi": float(d.mean() + half),
        "boot_lo": float(np.quantile(boot, tail)),
        "boot_hi": float(np.quantile(boot, 1 - tail)),
        "sign_test_p": float(stats.binomtest(int((d > 0).sum()), moved).pvalue) if moved else 1.0,
        "n_seeds": n,
        "sd": sd,
        "se": sd / np.sqrt(n),
        "mde": mde_seeds(n, sd),
        "target": target,
        "seeds_for_target": seeds_for(sd, target),
        "per_seed": [float(x) for x in d],
        "zero_spread": flat,
    }


def seed_change(at_bias, at_control, alpha: float = 0.05, power: float = 0.8) -> dict:
    """The change of a seed-level difference between two separate trainings (a bias value and
    its control): Welch's t over the two sets of per-seed differences (scipy.stats.ttest_ind,
    unequal variances), each >= 2 seeds (1-D). Returns {"diff" (mean at the bias minus mean
    at the control), "lo", "hi" (95% Welch interval, whatever ``alpha``), "se", "df"
    (Welch-Satterthwaite), "p" (two-sided), "mde" ((t_{1-alpha/2, df} + t_{power, df}) * se),
    "n_bias", "n_control", "n_seeds" (the smaller count), "zero_spread"}. With no spread on
    either side (``zero_spread``) there is no test: df, p and mde are None, lo = hi = diff,
    and the verdict says so (the seeds' sample spread is 0, not the true one)."""
    a, b = np.asarray(at_bias, dtype=float), np.asarray(at_control, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or a.size < 2 or b.size < 2:
        raise ValueError(f"need >= 2 seeds on each side (1-D), got {a.shape} and {b.shape}")
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    counts = {"n_bias": a.size, "n_control": b.size, "n_seeds": int(min(a.size, b.size))}
    if se <= FLAT * max(1.0, abs(d)):
        none = {"df": None, "p": None, "mde": None}
        return {"diff": d, "lo": d, "hi": d, "se": 0.0, **none, **counts, "zero_spread": True}
    with warnings.catch_warnings():  # one side flat is fine here (its variance is exactly 0)
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        t = stats.ttest_ind(a, b, equal_var=False)
    ci = t.confidence_interval(LEVEL)
    q = stats.t.ppf(1 - alpha / 2, t.df) + stats.t.ppf(power, t.df)
    return {
        "diff": d,
        "lo": float(ci.low),
        "hi": float(ci.high),
        "se": se,
        "df": float(t.df),
        "p": float(t.pvalue),
        "mde": float(q * se),
        **counts,
        "zero_spread": False,
    }


def verdict(diff: dict, mde: float | None) -> str:
    """One line for a table: the effect and its interval when the interval excludes 0, else
    that no effect was detected and how large an effect could have been (never that the
    claim fails: absence of evidence is stated with its power). With one cluster (one training
    seed) the interval covers probe sampling only, and with two or three a cluster bootstrap
    sees little of the seed variance: the line says so. A seed-level view with zero spread
    (``zero_spread``) gets no test."""
    if diff.get("zero_spread"):
        return f"zero spread over seeds (difference {diff['diff']:+.3f}): no test, MDE undefined"
    n_seeds = diff.get("n_clusters", FEW_SEEDS)
    if n_seeds < 2:
        one_seed = "; one seed: the interval leaves out seed-to-seed variance"
    elif n_seeds < FEW_SEEDS:  # 2026-12-02: 2 seeds' bootstrap said [+0.033, +0.149], the
        # 4 seeds' t interval [-0.052, +0.247] (docs/LOG.md, session 4)
        one_seed = f"; {n_seeds} seeds: a bootstrap over so few understates seed-to-seed variance"
    else:
        one_seed = ""
    if diff["lo"] > 0 or diff["hi"] < 0:
        return (
            f"effect detected ({diff['diff']:+.3f}, {LEVEL:.0%} CI "
            f"[{diff['lo']:+.3f}, {diff['hi']:+.3f}]{one_seed})"
        )
    if diff.get("se", 1.0) == 0.0:  # every paired difference 0: no spread, no power figure
        return "no difference at all (zero spread: MDE undefined)"
    return f"no effect detected (MDE {mde:.3f}{one_seed})"
