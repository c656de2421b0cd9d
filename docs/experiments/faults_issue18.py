"""The faults of issue 18, each in its own tiny project, against a given checkout: what the
stage did (exit code, one line of what was seen). Run it on the code before and after the fix
to fill docs/LOG.md's fault table:

    python docs/experiments/faults_issue18.py --checkout /path/to/checkout [--deepspeed]

Only the CLI (``python -m mmrpt``) and small ``python -c`` injections are used, so it runs
against any version of the package. Each case builds what it needs (data, a 10-step warmup);
about 5 minutes on 2 cores (+2 with --deepspeed).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE))
from tests.tiny_params import TINY  # noqa: E402

PARAMS = json.loads(json.dumps(TINY))
PARAMS["warmup"] |= {"max_steps": 10, "save_steps": 10}


class CreatesFile:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def payload(target: Path) -> bytes:
    return pickle.dumps(CreatesFile(str(target)))


class Project:
    def __init__(self, checkout: Path, root: Path):
        self.checkout, self.root = checkout, root
        root.mkdir(parents=True)
        (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(self.checkout), "OMP_NUM_THREADS": "1"}

    def run(self, *args: str, code: str | None = None, timeout: int = 600):
        head = ["-c", code] if code else ["-m", "mmrpt"]
        proc = subprocess.run(
            [sys.executable, *head, *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "mmrpt", *args],
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def warmed(self) -> Project:
        for stage in ("data", "warmup"):
            code, out = self.run(stage)
            assert code == 0, out[-2000:]
        return self


def last_line(text: str) -> str:
    """The CLI's own error line (with the next line when it ends in ':'), or the traceback's
    last line, or the last line."""
    lines = [x for x in text.replace("\r", "\n").splitlines() if x.strip()]
    tail = lines[-1] if lines else ""
    if any(x.startswith("Traceback") for x in lines):
        return f"traceback: {tail[:160]}"
    for i, line in enumerate(lines):
        if "mmrpt: " in line:
            mine = line[line.index("mmrpt: ") :]
            if mine.endswith(":") and i + 1 < len(lines):
                mine += " " + lines[i + 1].strip()
            return mine[:220]
    return tail[:200]


def runs(root: Path) -> list[tuple[str, str]]:
    db = root / "mlruns/mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return con.execute("select name, status from runs").fetchall()


NAN = """
import sys
from transformers import Trainer
loss = Trainer.compute_loss
def nan(self, *a, **k):
    out = loss(self, *a, **k)
    return out * float("nan") if self.state.global_step >= 2 else out
Trainer.compute_loss = nan
from mmrpt.cli import main
sys.exit(main(sys.argv[1:]))
"""
DISK_FULL = """
import sys
from pathlib import Path
from transformers import Trainer
save = Trainer._save_optimizer_and_scheduler
def full(self, output_dir):
    if output_dir.endswith("checkpoint-20"):
        Path(output_dir, "optimizer.pt").write_bytes(b"")
        raise OSError(28, "No space left on device (injected)")
    return save(self, output_dir)
Trainer._save_optimizer_and_scheduler = full
from mmrpt.cli import main
sys.exit(main(sys.argv[1:]))
"""
VLMEVAL = """
import sys
from mmrpt.evaluation.reference import ConstantAnswerer
from mmrpt.evaluation.vlmevalkit import run_vlmevalkit
run_vlmevalkit(None, "data/world", ["test_iid"], sys.argv[1], limit=2,
               answerer=ConstantAnswerer())
"""
KILL_AFTER_15 = """
import os, signal, sys
from mmrpt import tracking
on_log = tracking.StepLogger.on_log
def then_killed(self, args, state, control, logs=None, **kw):
    on_log(self, args, state, control, logs=logs, **kw)
    if state.global_step == 15:
        os.kill(os.getpid(), signal.SIGKILL)
tracking.StepLogger.on_log = then_killed
from mmrpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def case_vlmevalkit_pickle(p: Project) -> str:
    p.run("data")
    out = p.root / "eval/mmrpt-0/zero_shot/vlmevalkit"
    out.mkdir(parents=True)
    for name in ("mmrpt_mmrpt_probes_iid_PREV.pkl", "01_mmrpt_probes_iid.pkl"):
        (out / name).write_bytes(payload(p.root / "pwned"))
    code, text = p.run(str(out), code=VLMEVAL)
    return f"exit {code}; payload ran: {(p.root / 'pwned').exists()}"


def case_deepspeed_pickle(p: Project) -> str:
    import socket

    for stage in (["data"], ["warmup"], ["score"], ["mask"], ["primer"]):
        assert p.run(*stage)[0] == 0, stage
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ |= dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    cfg = p.checkout / "mmrpt/deepspeed/zero2.json"
    args = ["rl", "--arm", "mmrpt", "--seed", "0", "-S", f"launch.deepspeed={cfg}"]
    code, text = p.run(*args)
    assert code == 0, text[-2000:]
    states = p.root / "checkpoints/rl/mmrpt-0/checkpoint-4/global_step4/mp_rank_00_model_states.pt"
    states.write_bytes(payload(p.root / "pwned"))
    code, text = p.run(*args)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k)
    return f"exit {code}; payload ran: {(p.root / 'pwned').exists()}; {last_line(text)}"


def case_checkpoint_dir_dot(p: Project) -> str:
    p.warmed()
    (p.root / "notes.txt").write_text("mine")
    code, text = p.run("warmup", "-S", "warmup.checkpoint_dir=.", "-S", "warmup.max_steps=2")
    left = sorted(x.name for x in p.root.iterdir())
    return f"exit {code}; notes.txt kept: {(p.root / 'notes.txt').exists()}; {len(left)} entries left; {last_line(text)}"


def case_out_dir_data(p: Project) -> str:
    p.warmed()
    code, text = p.run("warmup", "-S", "warmup.out_dir=data")
    return (
        f"exit {code}; data/world kept: {(p.root / 'data/world/train.jsonl').exists()}; "
        f"{last_line(text)}"
    )


def case_user_folder(p: Project) -> str:
    p.warmed()
    (p.root / "mine").mkdir()
    (p.root / "mine/thesis.tex").write_text("x")
    code, text = p.run("warmup", "-S", "warmup.checkpoint_dir=mine")
    return f"exit {code}; mine/thesis.tex kept: {(p.root / 'mine/thesis.tex').exists()}; {last_line(text)}"


def case_nan_loss(p: Project) -> str:
    p.run("data")
    code, text = p.run("warmup", "-S", "warmup.max_steps=8", "-S", "warmup.save_steps=2", code=NAN)
    model = p.root / "models/warmup/model.safetensors"
    nan = None
    if model.exists():
        import torch
        from safetensors.torch import load_file

        nan = any(not torch.isfinite(w).all() for w in load_file(model).values())
    return f"exit {code}; NaN model saved: {nan}; {last_line(text)}"


def case_nan_input(p: Project) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    p.warmed()
    path = p.root / "models/warmup/model.safetensors"
    w = load_file(path)
    w = {k: torch.full_like(v, float("nan")) for k, v in w.items()}
    save_file(w, path, metadata={"format": "pt"})
    code, text = p.run("score")
    return f"exit {code}; scores written: {(p.root / 'data/scores/scores.parquet').exists()}; {last_line(text)}"


def _jsonl_project(p: Project, rows: list[str]) -> tuple[int, str]:
    from PIL import Image

    src = p.root / "raw"
    src.mkdir()
    Image.new("RGB", (24, 24), "red").save(src / "red.png")
    (src / "train.jsonl").write_text("\n".join(rows) + "\n")
    inputs = json.dumps({"train": str(src / "train.jsonl")})
    return p.run("data", "-S", "data.source=jsonl", "-S", f"data.inputs={inputs}")


def _accepted(p: Project) -> list[str]:
    path = p.root / "data/world/train.jsonl"
    return [json.loads(x)["id"] for x in path.read_text().splitlines()] if path.exists() else []


def case_special_tokens(p: Project) -> str:
    ok = "A red square. It is on the left."
    rows = [
        json.dumps({"id": "ok", "image": "red.png", "caption": ok}),
        json.dumps({"id": "end", "image": "red.png", "caption": "A red<|im_end|> square. Left."}),
        json.dumps({"id": "pad", "image": "red.png", "caption": "A <|image_pad|> sq. Left."}),
    ]
    code, text = _jsonl_project(p, rows)
    return f"exit {code}; accepted: {_accepted(p)}"


def case_bad_rows(p: Project) -> str:
    rows = [
        json.dumps({"id": "ok", "image": "red.png", "caption": "A red square. It is left."}),
        '{"id": "s", "image": "red.png", "caption": "A red \\ud800 square. It is left."}',
        json.dumps({"id": "huge", "image": "red.png", "caption": "A red square. " * 15000}),
    ]
    code, text = _jsonl_project(p, rows)
    return f"exit {code}; accepted: {_accepted(p)}; {last_line(text) if code else ''}"


def case_llava_bomb(p: Project) -> str:
    from tests.reliability.test_bad_data import png_header_only

    (p.root / "bomb.png").write_bytes(png_header_only(60_000, 60_000))
    turns = [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red."}]
    (p.root / "sft.json").write_text(
        json.dumps([{"id": "b", "image": "bomb.png", "conversations": turns}])
    )
    code = "from mmrpt.finetune.vqa import llava_rows; print(llava_rows('sft.json')[1].reasons)"
    rc, text = p.run(code=code)
    return f"exit {rc}; {last_line(text)}"


def case_partial_checkpoint(p: Project) -> str:
    p.run("data")
    steps = ["-S", "warmup.max_steps=20"]
    first, _ = p.run("warmup", *steps, code=DISK_FULL)
    second, text = p.run("warmup", *steps)
    return f"full disk: exit {first}; rerun: exit {second}; {last_line(text)}"


def case_two_warmups(p: Project) -> str:
    p.run("data")
    procs = [p.popen("warmup", "-S", "warmup.max_steps=30") for _ in range(2)]
    codes = [proc.wait(timeout=600) for proc in procs]
    names = [name for name, _ in runs(p.root)]
    return f"exits {sorted(codes)}; MLflow warmup runs: {names.count('warmup')}"


def case_stale_split(p: Project) -> str:
    p.run("data")
    _jsonl_project(p, [json.dumps({"id": "r", "image": "red.png", "caption": "A red sq. Left."})])
    m = json.loads((p.root / "metrics/data.json").read_text())
    return (
        f"dev.jsonl left: {(p.root / 'data/world/dev.jsonl').exists()}; "
        f"splits in metrics: {sorted({k.split('/')[0] for k in m})}"
    )


def case_empty_params(p: Project) -> str:
    (p.root / "params.yaml").write_text("")
    code, text = p.run("data", "-S", "data.n_train=4", "-S", "data.n_dev=2", "-S", "data.n_test=2")
    return f"exit {code}; data generated: {(p.root / 'data/world').exists()}; {last_line(text)}"


def case_bad_yaml(p: Project) -> str:
    (p.root / "params.yaml").write_bytes(b"warmup: [1, 2\n")
    code, text = p.run("data")
    (p.root / "params.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    code2, text2 = p.run("data")
    return f"not YAML: exit {code}, {last_line(text)}; binary: exit {code2}, {last_line(text2)}"


def case_seed(p: Project) -> str:
    p.run("data")
    code, text = p.run("rl", "--arm", "mmrpt", "--seed", "99999999999")
    return f"exit {code}; {last_line(text)}"


def case_missing_input(p: Project) -> str:
    code, text = p.run("warmup")
    return f"exit {code}; {last_line(text)}"


def case_broken_store(p: Project) -> str:
    p.run("data")
    (p.root / "mlruns/mlflow.db").write_bytes(b"not a database\n" * 100)
    code, text = p.run("warmup", "-S", "warmup.max_steps=2")
    return f"exit {code}; {last_line(text)}"


def case_deleted_store(p: Project) -> str:
    p.run("data")
    proc = p.popen("warmup", "-S", "warmup.max_steps=40", "-S", "warmup.save_steps=10")
    ckpt = p.root / "checkpoints/warmup/checkpoint-10"
    while not ckpt.exists() and proc.poll() is None:
        time.sleep(0.05)
    shutil.rmtree(p.root / "mlruns", ignore_errors=True)
    out, _ = proc.communicate(timeout=600)
    return f"exit {proc.returncode}; store exists: {(p.root / 'mlruns').exists()}; {last_line(out)}"


def case_sigterm(p: Project) -> str:
    p.run("data")
    proc = p.popen("warmup", "-S", "warmup.max_steps=40", "-S", "warmup.save_steps=10")
    ckpt = p.root / "checkpoints/warmup/checkpoint-10/trainer_state.json"
    while not ckpt.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    saved = sorted(x.name for x in (p.root / "checkpoints/warmup").glob("checkpoint-*"))
    return f"exit {proc.returncode}; MLflow: {runs(p.root)}; checkpoints: {saved}"


def case_curves(p: Project) -> str:
    p.run("data")
    steps = ["-S", "warmup.max_steps=40", "-S", "warmup.save_steps=10"]
    p.run("warmup", *steps, code=KILL_AFTER_15)
    p.run("warmup", *steps)
    with sqlite3.connect(p.root / "mlruns/mlflow.db") as con:
        history = [s for (s,) in con.execute("select step from metrics where key='train/loss'")]
    return f"train/loss steps logged: {sorted(history)}"


CASES = [name for name in dir() if name.startswith("case_")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkout", type=Path, default=HERE)
    ap.add_argument("--deepspeed", action="store_true")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    names = [c for c in CASES if c != "case_deepspeed_pickle" or args.deepspeed]
    if args.only:
        names = [c for c in names if any(o in c for o in args.only)]
    with tempfile.TemporaryDirectory(prefix="faults18-") as tmp:
        for name in names:
            project = Project(args.checkout.resolve(), Path(tmp) / name)
            t0 = time.time()
            try:
                seen = globals()[name](project)
            except Exception as e:  # noqa: BLE001 - a case that breaks is a finding too
                seen = f"case error: {type(e).__name__}: {e}"[:300]
            print(f"| {name.removeprefix('case_')} | {seen} | {time.time() - t0:.0f} s |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
