"""Per-probe outcomes of one model in one shared scoring format, for paired statistics.

Every arm is scored the same way: option log-likelihood (mmrpt.evaluation.scorer.Scorer), the
option with the highest summed log-probability is the model's pick. Two forms:

- ``fillin``: the probe's statement with the words its options differ in as the blank [1]
  ("A large [1] circle is at the top left."), in the fill-in prompt every arm starts from (the
  primer's format); option i is the answer "<answer>[1] <words of option i></answer>"
  (with the think block when the samples carry one). It measures what the arms were trained
  to do, zero-shot.
- ``question``: the probe's question, each option's text as the assistant's answer: the form
  downstream SFT teaches.

A row per probe: its id, scene, split, type, ``conflict`` (the true answer differs from the
language prior's), the answer's, the prior's and the picked option's index, ``correct`` and
``picked_prior``. The lm-eval and VLMEvalKit harnesses of the eval stage report aggregates;
the paired study needs each item's outcome, so it scores here (with the same Scorer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mmrpt.evaluation.scorer import Query, load_image
from mmrpt.masking.samples import fillin_prompt, fillin_target

FORMS = ("fillin", "question")


def fillin_form(statements: Sequence[str]) -> tuple[str, list[str]]:
    """(statement with the differing words as [1], the differing words of each option):
    the longest word prefix and suffix all statements share stay, the rest is the blank."""
    words = [s.split() for s in statements]
    lo = 0
    while all(len(w) > lo for w in words) and len({w[lo] for w in words}) == 1:
        lo += 1
    hi = 0
    while all(len(w) > lo + hi for w in words) and len({w[-1 - hi] for w in words}) == 1:
        hi += 1
    if not lo and not hi:
        raise ValueError(f"statements share no words: {statements}")
    middles = [" ".join(w[lo : len(w) - hi]) for w in words]
    if len(set(middles)) != len(middles) or not all(middles):
        raise ValueError(f"statements do not differ in one place: {statements}")
    head, tail = " ".join(words[0][:lo]), " ".join(words[0][len(words[0]) - hi :])
    return " ".join(x for x in (head, "[1]", tail) if x), middles


def queries(
    probes: Sequence[dict], root: str | Path, form: str, instruction: str = "", think: bool = True
) -> list[Query]:
    """One scorer query per probe in ``form`` (``fillin`` needs the fill-in ``instruction``)."""
    if form not in FORMS:
        raise ValueError(f"form {form!r}: one of {FORMS}")
    out = []
    for p in probes:
        image = load_image(str(Path(root) / p["image"]))
        if form == "question":
            out.append(Query(image, p["question"], tuple(p["choices"])))
            continue
        masked, middles = fillin_form(p["statements"])
        options = tuple(
            fillin_target([m]) if think else fillin_target([m], think=None) for m in middles
        )
        out.append(Query(image, fillin_prompt(instruction, masked), options))
    return out


def outcomes(
    scorer,
    probes: Sequence[dict],
    root: str | Path,
    form: str,
    instruction: str = "",
    think: bool = True,
) -> pd.DataFrame:
    """The table of per-probe outcomes (see the module docstring)."""
    scores = scorer.score_options(queries(probes, root, form, instruction, think))
    rows = []
    for p, s in zip(probes, scores, strict=True):
        picked = max(range(len(s)), key=lambda i: s[i][0])
        prior = p.get("prior")
        rows.append(
            {
                "id": p["id"],
                "scene": p["scene_id"],
                "split": p["split"],
                "type": p["type"],
                "conflict": bool(p.get("conflict", False)),
                "answer": p["answer"],
                "prior": -1 if prior is None else prior,
                "picked": picked,
                "correct": picked == p["answer"],
                "picked_prior": prior is not None and picked == prior,
            }
        )
    return pd.DataFrame(rows)


def select(probes: Sequence[dict], limit: int | None) -> list[dict]:
    """The first ``limit`` probes of each type, plus every prior-conflict probe (all of them
    are kept: they carry the study's primary metric)."""
    if limit is None:
        return list(probes)
    seen: dict[str, int] = {}
    out = []
    for p in probes:
        seen[p["type"]] = seen.get(p["type"], 0) + 1
        if p.get("conflict") or seen[p["type"]] <= limit:
            out.append(p)
    return out


def score_model(
    scorer,
    root: str | Path,
    splits: Sequence[str],
    forms: Sequence[str],
    *,
    instruction: str,
    think: bool,
    limit: int | None = None,
) -> pd.DataFrame:
    """Outcome rows of one model on the probes of ``splits`` (data_root/probes/<split>.jsonl)
    in each of ``forms``, with a ``form`` column."""
    from mmrpt.io import read_jsonl

    frames = []
    for split in splits:
        probes = select(read_jsonl(Path(root) / "probes" / f"{split}.jsonl"), limit)
        for form in forms:
            table = outcomes(scorer, probes, root, form, instruction, think)
            frames.append(table.assign(form=form))
    return pd.concat(frames, ignore_index=True)


def headline(table: pd.DataFrame) -> dict[str, float]:
    """The study's primary numbers from a zero-shot outcome table: accuracy on prior-conflict
    colour probes and the rate of picking the prior there (fill-in form when scored)."""
    form = "fillin" if (table.form == "fillin").any() else "question"
    part = table[(table.form == form) & table.conflict & (table.type == "colour")]
    if part.empty:
        return {}
    return {
        "conflict_acc": float(part.correct.mean()),
        "prior_rate": float(part.picked_prior.mean()),
    }
