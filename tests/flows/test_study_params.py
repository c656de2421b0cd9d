import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.study import workspace_params
from mmrpt.config import Params, ParamsError

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles/study.yaml"


def test_profile_then_overrides_then_bias():
    raw = workspace_params(ROOT, PROFILE, 0.6)
    p = Params.model_validate(raw)
    assert p.seeds == [0, 1, 2, 3] and list(p.arms) == ["masked_sft", "mmrpt"]
    assert p.data.caption_bias == 0.6 and p.sft.budgets == []
    assert p.mask.granularity == "attribute"  # the profile's overlay
    # the profile's commented arms, added as its comment says
    lines = [x for x in PROFILE.read_text().splitlines() if x.startswith("#   ")]
    extra = ", ".join(x[4:].split("  #")[0] for x in lines)
    mmrpt = "{objective: grpo, reward_weights: {format: 0.2, visual: 1.0}}"  # the profile's
    arms = f"{{masked_sft: {{objective: sft}}, mmrpt: {mmrpt}, {extra}}}"
    raw = workspace_params(ROOT, PROFILE, 0.0, ["seeds=[0, 1]", f"arms={arms}"])
    p = Params.model_validate(raw)
    assert p.seeds == [0, 1] and list(p.arms) == ["masked_sft", "mmrpt", "mmrpt_no_visual", "rft"]
    assert p.arms["rft"].objective == "rft" and p.arms["mmrpt_no_visual"].reward_weights["exact"]
    assert p.data.caption_bias == 0.0 and p.mask.granularity == "attribute"


def test_a_bad_override_names_itself():
    with pytest.raises(ParamsError, match=r"-S seeds=\[\]"):
        workspace_params(ROOT, PROFILE, 0.6, ["seeds=[]"])


def test_flows_give_the_temporary_prefect_server_time_to_start():
    """A cold Prefect database took longer than Prefect's default start-up wait: importing the
    flows sets 90 s unless the user chose a value."""
    code = "import flows, os; print(os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS'])"
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    }
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert run.stdout.strip() == "90", run.stderr
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert run.stdout.strip() == "300", run.stderr
