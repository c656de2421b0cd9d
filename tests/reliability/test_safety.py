"""Safety: nothing loads pickles or remote code, runs a shell, or listens beyond loopback by
default; weights are written as safetensors only.

The source scan is an AST walk over mmrpt/ and flows/ (each rule is checked to fire on a bad
snippet first, so a scanner that finds nothing is not mistaken for clean code). Loading a
folder without safetensors is refused: tests/modeling/test_tiny.py.

Third-party code (issue 18): the same scan runs over the libraries on the pipeline's paths
(transformers' Trainer and model loading, TRL's trainers, DeepSpeed's checkpoint loading,
accelerate, VLMEvalKit, lm-eval) and every unpickling load it finds is listed in THIRD_PARTY
with how it is kept away from files this workspace did not write and hash; a library upgrade
that adds one fails the test until it is reviewed. Payload tests: test_artifacts.py.
"""

from __future__ import annotations

import ast
import inspect
import re
import warnings
from pathlib import Path

import pytest
import yaml

from mmrpt.config import Params

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SUBPROCESS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
}
PICKLE = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "torch.serialization.load",
    "pd.read_pickle",
    "pandas.read_pickle",
}
SHELL = {
    "os.system",
    "os.popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_text(node: ast.AST) -> bool:
    """A command given as one string: a literal, an f-string, concatenation, % or .format()."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        or isinstance(node, ast.JoinedStr | ast.BinOp)
        or isinstance(node, ast.Call)
        and _name(node.func).endswith((".format", ".join"))
    )


def _parse(source: str) -> ast.AST:
    """``ast.parse`` without the SyntaxWarnings of other people's code (e.g. "invalid escape
    sequence" in a third-party regex): we read their calls, we do not fix their strings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source)


def unsafe_code(source: str, where: str = "<src>") -> list[str]:
    """'where:line: what' for each unsafe construct in Python ``source``."""
    found = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{node.lineno}: {what}")

    for node in ast.walk(_parse(source)):
        if isinstance(node, ast.Call):
            fn = _name(node.func)
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if fn == "torch.load" and not _is_true(kw.get("weights_only")):
                flag(node, "torch.load without weights_only=True")
            if fn in PICKLE:
                flag(node, f"{fn} (unpickles arbitrary objects)")
            if fn in ("np.load", "numpy.load") and _is_true(kw.get("allow_pickle")):
                flag(node, f"{fn} with allow_pickle=True")
            if fn in ("yaml.load", "yaml.unsafe_load", "yaml.full_load") and not (
                fn == "yaml.load"
                and _name(kw.get("Loader", ast.Constant(None))).endswith(
                    ("SafeLoader", "CSafeLoader")
                )
            ):
                flag(node, f"{fn} without SafeLoader")
            if fn in ("eval", "exec"):
                flag(node, f"{fn}()")
            if _is_true(kw.get("trust_remote_code")):
                flag(node, "trust_remote_code=True hard-coded")
            if "shell" in kw and not (
                isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False
            ):
                flag(node, "shell=...")
            if fn in SHELL:
                flag(node, f"{fn} (runs a shell)")
            if fn in SUBPROCESS and node.args:
                cmd = node.args[0]
                if _is_text(cmd):
                    flag(node, f"{fn} with a command built as a string")
                elif isinstance(cmd, ast.List | ast.Tuple) and [
                    str(e.value) if isinstance(e, ast.Constant) else "?" for e in cmd.elts[:2]
                ] in (["sh", "-c"], ["bash", "-c"]):
                    flag(node, f"{fn} of a shell -c string")
            host = kw.get("host")
            if isinstance(host, ast.Constant) and host.value not in LOOPBACK:
                flag(node, f"host={host.value!r}")
            if fn.endswith(".bind") and node.args and isinstance(node.args[0], ast.Tuple):
                addr = node.args[0].elts[0]
                if isinstance(addr, ast.Constant) and addr.value not in LOOPBACK:
                    flag(node, f"bind to {addr.value!r}")
        # trust_remote_code defaulting to True: a parameter default or a (pydantic) field
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.args + node.args.kwonlyargs
            defaults = (
                [None] * (len(node.args.args) - len(node.args.defaults))
                + node.args.defaults
                + node.args.kw_defaults
            )
            for arg, default in zip(args, defaults, strict=True):
                if arg.arg == "trust_remote_code" and _is_true(default):
                    flag(node, "trust_remote_code defaults to True")
        if (
            isinstance(node, ast.AnnAssign)
            and _name(node.target) == "trust_remote_code"
            and _is_true(node.value)
        ):
            flag(node, "trust_remote_code defaults to True")
    return found


BAD = """
import os, pickle, subprocess, torch, yaml
torch.load(path)
torch.load(path, weights_only=False)
pickle.loads(blob)
pd.read_pickle(path); np.load(path, allow_pickle=True)
yaml.load(text)
eval(expr)
AutoModel.from_pretrained(p, trust_remote_code=True)
def load(path, trust_remote_code=True): ...
class M(Section):
    trust_remote_code: bool = True
subprocess.run(f"dvc repro {stage}", shell=True)
subprocess.run("git rev-parse " + ref)
subprocess.run(["bash", "-c", cmd])
os.system("ls")
app.run(host="0.0.0.0")
sock.bind(("0.0.0.0", 80))
"""
GOOD = """
torch.load(path, weights_only=True)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.safe_load(text)
AutoModel.from_pretrained(p, trust_remote_code=params.model.trust_remote_code)
def load(path, trust_remote_code=False): ...
subprocess.run(["git", "rev-parse", "HEAD"], check=False)
subprocess.run([sys.executable, "-c", code, "score"], shell=False)
server.start(host="127.0.0.1")
sock.bind(("127.0.0.1", 0))
"""


def test_the_scanner_finds_each_unsafe_construct():
    lines = sorted(int(f.split(":")[1]) for f in unsafe_code(BAD))
    assert lines == [3, 4, 5, 6, 6, 7, 8, 9, 10, 12, 13, 13, 14, 15, 16, 17, 18]
    assert unsafe_code(GOOD) == []


def test_no_unsafe_code_in_the_package_and_flows():
    files = sorted([*ROOT.glob("mmrpt/**/*.py"), *ROOT.glob("flows/**/*.py")])
    assert len(files) > 20
    found = [
        f for path in files for f in unsafe_code(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_the_trainers_resume_state_is_loaded_with_weights_only():
    """Checkpoints hold the HF Trainer's optimizer/scheduler/RNG state as torch pickles
    (optimizer.pt, scheduler.pt, rng_state.pth); resuming loads them with weights_only=True."""
    import transformers.trainer

    source = Path(transformers.trainer.__file__).read_text()
    assert source.count("torch.load(") >= 5
    assert [f for f in unsafe_code(source) if "torch.load" in f] == []


SITE = Path(yaml.__file__).resolve().parents[1]  # site-packages
RESUME = (
    "a Trainer resume (DeepSpeed engine.load_checkpoint, accelerate load_state, the Trainer's "
    "own state): mmrpt.training.train_resumable is the only resume, and it hands the Trainer "
    "only a checkpoint whose every file matches the record this workspace wrote after saving "
    "it (mmrpt.checkpoints.resume_point); others are removed unread"
)
THIRD_PARTY = {  # file: (unpickling loads the scan finds, why none reads a foreign file)
    "transformers/modeling_utils.py": (
        1,
        "load_state_dict's torch.load fallback for .bin weights: mmrpt loads models with "
        "use_safetensors=True and refuses a folder without *.safetensors (load_vlm, the resume "
        "mixin)",
    ),
    "deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py": (1, RESUME),
    "deepspeed/runtime/checkpoint_engine/fast_checkpoint_engine.py": (1, RESUME),
    "deepspeed/runtime/checkpoint_engine/decoupled_checkpoint_engine.py": (1, RESUME),
    "deepspeed/runtime/base_optimizer.py": (1, RESUME),
    "deepspeed/runtime/zero/stage3.py": (2, RESUME),
    "deepspeed/checkpoint/autoep_universal.py": (6, RESUME),
    "deepspeed/checkpoint/deepspeed_checkpoint.py": (7, RESUME),
    "deepspeed/checkpoint/ds_to_universal.py": (13, RESUME),
    "deepspeed/checkpoint/reshape_3d_utils.py": (1, RESUME),
    "deepspeed/checkpoint/universal_checkpoint.py": (1, RESUME),
    "deepspeed/checkpoint/zero_checkpoint.py": (1, RESUME),
    "accelerate/accelerator.py": (1, RESUME),
    "accelerate/utils/other.py": (1, RESUME),
    "accelerate/utils/operations.py": (
        2,
        "gather/broadcast of objects between the run's own processes (memory, not files)",
    ),
    "vlmeval/smp/file.py": (
        1,
        "vlmeval.smp.load of VLMEvalKit's resume pickles: run_vlmevalkit gives it a fresh "
        "private work folder per run, so it reads back only what it wrote in this process",
    ),
    "lm_eval/caching/cache.py": (
        1,
        "lm-eval's request cache: off (cache_requests=False, the default; run_lmeval never "
        "sets it), and its task YAMLs go to a fresh private folder (their !function tag "
        "imports code)",
    ),
}
SCANNED = [  # the libraries' modules on the resume and evaluation paths
    "transformers/trainer*.py",
    "transformers/integrations/deepspeed.py",
    "transformers/modeling_utils.py",
    "trl/trainer/*.py",
    "deepspeed/runtime/**/*.py",
    "deepspeed/checkpoint/*.py",
    "accelerate/*.py",
    "accelerate/utils/*.py",
    "vlmeval/smp/*.py",
    "vlmeval/inference.py",
    "vlmeval/dataset/image_*.py",
    "lm_eval/caching/*.py",
    "lm_eval/api/*.py",
    "lm_eval/evaluator.py",
]


def test_every_unpickling_load_in_third_party_code_is_accounted_for():
    found: dict[str, int] = {}
    files = sorted({f for pattern in SCANNED for f in SITE.glob(pattern)})
    assert len(files) > 100
    for f in files:
        hits = [x for x in unsafe_code(f.read_text(), str(f)) if "torch.load" in x or "pickl" in x]
        if hits:
            found[str(f.relative_to(SITE))] = len(hits)
    assert found == {k: n for k, (n, _) in THIRD_PARTY.items()}


def _calls(path: Path) -> list[tuple[str, set[str], int]]:
    """(function name, keyword names, line) of every call in ``path``."""
    return [
        (_name(n.func), {k.arg for k in n.keywords if k.arg}, n.lineno)
        for n in ast.walk(_parse(path.read_text()))
        if isinstance(n, ast.Call)
    ]


def test_checkpoints_are_loaded_only_through_the_checked_resume():
    from mmrpt import training

    loads = [
        f"{path.relative_to(ROOT)}:{line}: {fn}"
        for path in sorted([*ROOT.glob("mmrpt/**/*.py"), *ROOT.glob("flows/**/*.py")])
        for fn, kws, line in _calls(path)
        if "resume_from_checkpoint" in kws
        or fn.endswith(("load_checkpoint", "_load_from_checkpoint", ".load_state"))
    ]
    # the resume mixin hands LoRA checkpoints (adapters, safetensors) to the Trainer's own
    # loader; the mixin only runs inside trainer.train / _load_from_checkpoint below
    mixin = [x for x in loads if x.startswith("mmrpt/modeling/loader.py:")]
    assert [x.split(": ")[1] for x in mixin] == ["._load_from_checkpoint"]
    loads = [x for x in loads if x not in mixin]
    assert sorted(x.split(": ")[1] for x in loads) == [
        "trainer._load_from_checkpoint",
        "trainer.train",
    ]
    assert all(x.startswith("mmrpt/training.py:") for x in loads)
    source = inspect.getsource(training.train_resumable)
    assert source.index("checkpoints.resume_point(") < source.index("trainer.train(")
    assert "get_last_checkpoint" not in Path(training.__file__).read_text()


def test_lm_eval_caches_stay_off():
    from lm_eval import simple_evaluate

    defaults = inspect.signature(simple_evaluate).parameters
    assert defaults["cache_requests"].default is False and defaults["use_cache"].default is None
    calls = [
        kws
        for path in ROOT.glob("mmrpt/**/*.py")
        for fn, kws, _ in _calls(path)
        if fn.endswith("simple_evaluate")
    ]
    assert calls and not any({"cache_requests", "use_cache"} & kws for kws in calls)


def test_remote_code_is_off_unless_the_user_sets_it():
    assert Params().model.trust_remote_code is False
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["model"]["trust_remote_code"] is False


SERVER_FILES = ["Makefile", "README.md", "prefect.yaml", "deploy", "docs", "flows", "mmrpt"]
SERVER_COMMAND = re.compile(r"\b(mlflow (ui|server)|prefect server start)\b")
HOST = re.compile(r"--host[= ]+(\S+)")
ANY_ADDRESS = re.compile(r"0\.0\.0\.0|\[::\]")


def exposed_servers(text: str, where: str) -> list[str]:
    """Server commands or settings that listen beyond loopback, 'where:line: line'."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        hosts = HOST.findall(line)
        bad = (
            any(h.strip("'\"`") not in LOOPBACK for h in hosts)
            or ANY_ADDRESS.search(line)
            or (SERVER_COMMAND.search(line) and "`" not in line and not hosts)
        )
        if bad:
            found.append(f"{where}:{n}: {line.strip()}")
    return found


def test_servers_bind_loopback_by_default():
    assert exposed_servers(
        "mlflow server --port 5000\nprefect server start --host 0.0.0.0\n"
        "  host: 0.0.0.0\nmlflow ui --host=localhost",
        "x",
    ) == [
        "x:1: mlflow server --port 5000",
        "x:2: prefect server start --host 0.0.0.0",
        "x:3: host: 0.0.0.0",
    ]
    files = [
        f
        for name in SERVER_FILES
        for f in ([ROOT / name] if (ROOT / name).is_file() else (ROOT / name).rglob("*"))
        if f.is_file() and f.suffix in ("", ".md", ".yaml", ".yml", ".json", ".py")
    ]
    files = [f for f in files if f.name != "LOG.md"]  # a research log quotes, it does not run
    found = [x for f in files for x in exposed_servers(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == []
    commands = [
        line
        for f in files
        for line in f.read_text().splitlines()
        if SERVER_COMMAND.search(line) and "--host" in line
    ]
    assert len(commands) >= 2  # the Makefile's mlflow ui and the README's prefect server


WEIGHT_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack"}
TRAINER_STATE = {
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "training_args.bin",
    "scaler.pt",
}  # loaded with weights_only=True (test above); not weights


@pytest.mark.parametrize("folder", ["models", "checkpoints"])
def test_weights_are_saved_as_safetensors_only(scored_template: Path, folder: str):
    root = scored_template / folder
    files = [f for f in root.rglob("*") if f.is_file()]
    pickled = [f for f in files if f.suffix in WEIGHT_SUFFIXES]
    if folder == "models":
        assert pickled == []
    else:
        assert {f.name for f in pickled} <= TRAINER_STATE, pickled
    model_dirs = {f.parent for f in files if f.name == "config.json"}
    assert model_dirs  # models/warmup, checkpoints/warmup/{init,checkpoint-*}
    for d in model_dirs:
        assert (d / "model.safetensors").is_file(), d
