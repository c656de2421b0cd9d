"""The one launcher (mmrpt/launch.py): which command line a stage re-runs itself under, when,
and what it refuses."""

import os
import subprocess
import sys

import pytest
import torch

from mmrpt.cli import main
from mmrpt.config import LaunchParams, ParamsError
from mmrpt.launch import check_launcher, command, needs_relaunch


def test_torchrun_runs_the_same_command_in_n_processes():
    argv = ["rl", "--arm", "mmrpt", "--seed", "0", "-S", "launch.num_processes=4"]
    cmd = command(LaunchParams(num_processes=4), argv)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "4" and "--standalone" in cmd
    assert cmd[-len(argv) - 2 :] == ["-m", "mmrpt", *argv]


def test_accelerate_is_for_gpus():
    launch = LaunchParams(num_processes=2, launcher="accelerate")
    cmd = command(launch, ["sft", "--arm", "a", "--seed", "0"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="accelerate launch --cpu"):
            check_launcher(launch)


def test_when_a_stage_relaunches(monkeypatch):
    assert not needs_relaunch(LaunchParams())
    assert needs_relaunch(LaunchParams(num_processes=2))
    monkeypatch.setenv("WORLD_SIZE", "2")  # already one of the launched processes
    assert not needs_relaunch(LaunchParams(num_processes=2))


def test_a_launched_process_must_match_the_params(tiny_project, monkeypatch, capsys):
    """Started by hand under torchrun with another size than launch.num_processes: refused
    (batch params are split by that number); a one-process stage refuses any launcher."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    assert main(["warmup", "-S", "launch.num_processes=2"]) == 2
    assert "-S launch.num_processes=4" in capsys.readouterr().err
    assert main(["mask"]) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert [p.name for p in tiny_project.iterdir()] == ["params.yaml"]


def test_a_stage_without_torch_never_imports_it(primed_project):
    """data, mask and report need no torch: their process must not pay its import (~3 s on
    a 2-core machine) to learn that there is no process group to wait for."""
    import subprocess

    code = "import sys; from mmrpt.cli import main; print(main(['mask']), 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=primed_project, capture_output=True, text=True
    )
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout + out.stderr


def test_a_stage_process_iterates_sets_in_the_same_order_every_run():
    """`python -m mmrpt` restarts itself once with PYTHONHASHSEED=0 unless the user set one:
    outputs written in a set's order (TRL's model-card tags) hash the same in dvc.lock."""
    code = (
        "import os, runpy, sys; sys.argv = ['mmrpt', '--help'];"
        "print('seed', os.environ.get('PYTHONHASHSEED'), list({'trl', 'sft', 'a', 'b'}));"
        "runpy.run_module('mmrpt', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        for _ in range(2)
    ]
    seeded = [[line for line in r if line.startswith("seed 0 ")] for r in runs]
    assert seeded[0] and seeded[0] == seeded[1], runs
    kept = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONHASHSEED": "7"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert kept.count("seed ") == 1 and "seed 7 " in kept  # the user's value, no restart
