"""Small helpers shared by the stage entry points (not by components)."""

from __future__ import annotations

from mmrpt.contract import StageContext


def run_seed(ctx: StageContext) -> int:
    """The training seed of one arm replicate (its seed) under the pipeline seed."""
    return ctx.params.seed + 7919 * ctx.seed
