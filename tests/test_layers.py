"""The layering the codebase keeps: components (mmrpt/<package>/ and the shared modules) take
plain arguments and never reach up to the stages, the CLI, the tracking module, MLflow or
Prefect; only entry points (mmrpt/stages, cli.py, tracking.py, compare.py, flows/) do."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = (
    "data",
    "modeling",
    "scoring",
    "masking",
    "rl",
    "evaluation",
    "finetune",
    "pretrain",
    "report",
)
SHARED = (
    "io.py",
    "images.py",
    "training.py",
    "generation.py",
    "contract.py",
    "config.py",
    "safety.py",
    "checkpoints.py",
    "guards.py",
    "signals.py",
)
FORBIDDEN = (
    "prefect",
    "mlflow",
    "flows",
    "mmrpt.stages",
    "mmrpt.cli",
    "mmrpt.tracking",
    "mmrpt.compare",
    "mmrpt.pipeline",
)


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def component_files() -> list[Path]:
    files = [f for pkg in COMPONENTS for f in (ROOT / "mmrpt" / pkg).rglob("*.py")]
    return files + [ROOT / "mmrpt" / f for f in SHARED]


@pytest.mark.parametrize("path", component_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_components_do_not_import_entry_points(path: Path):
    bad = sorted(
        n for n in imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)
    )
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_scan_sees_every_form_of_import(tmp_path: Path):
    src = tmp_path / "m.py"
    src.write_text(
        "import mlflow\nfrom prefect import flow\nfrom mmrpt import tracking\n"
        "def f():\n    from mmrpt.stages.common import run_seed\n"
    )
    found = imports(src)
    assert {"mlflow", "prefect", "mmrpt.tracking", "mmrpt.stages.common"} <= found


def test_stages_that_train_nothing_do_not_import_torch():
    """data, mask, score_merge and report start without torch, transformers or peft (~10 s of
    start-up per process on the 2-core machine; docs/PERF.md): the CLI, tracking and these
    stages' modules import none of them."""
    import subprocess
    import sys

    code = (
        "import sys, mmrpt.cli, mmrpt.stagerun, mmrpt.tracking, mmrpt.signals, mmrpt.launch\n"
        "import mmrpt.stages.data, mmrpt.stages.mask, mmrpt.stages.score_merge\n"
        "import mmrpt.stages.report\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
