"""`dvc plots show` renders offline: a tiny DVC project shaped like ours (plot files are plain
outs with cache: false, plots defined only at the top of dvc.yaml) gets the project's
.dvc/config and the page template of mmrpt/report/dvc_plots.py; its page, opened from file://
in headless Chromium with every host name unresolvable, must draw each plot once, as an SVG
chart with its title, axis names and one line vertex (or bar) per CSV row."""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mmrpt.report.dvc_plots import DEFAULT_PATH, write_page_template

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (`make browser` installs it)"),
]

STEPS, LAYERS = 40, 8
ARMS = {"ntp": 0.27, "masked_sft": 0.285, "random_mask": 0.25, "mmrpt": 0.31}
PLOTS = {  # file -> (rows, top-level plot definition)
    "plots/warmup_loss.csv": (
        [{"step": s, "loss": round(2.5 * math.exp(-s / 10) + 0.1, 4)} for s in range(STEPS)],
        {
            "x": "step",
            "y": "loss",
            "title": "warmup caption loss",
            "x_label": "optimizer step",
            "y_label": "loss (nats/token)",
        },
    ),
    "plots/score_layers.csv": (
        [
            {"layer": i, "auroc_dev": 0.5 + 0.04 * i, "auroc_report": 0.52 + 0.035 * i}
            for i in range(LAYERS)
        ],
        {
            "x": "layer",
            "y": ["auroc_dev", "auroc_report"],
            "title": "AUROC per decoder layer",
            "x_label": "decoder layer",
            "y_label": "AUROC",
        },
    ),
    "plots/report_accuracy.csv": (
        [{"label": arm, "mean": acc} for arm, acc in ARMS.items()],
        {
            "x": "mean",
            "y": "label",
            "template": "bar_horizontal",
            "title": "accuracy per arm",
            "x_label": "accuracy (mean over seeds)",
            "y_label": "arm",
        },
    ),
}
# What the page must show per title: (line paths, vertices per line, bars). DVC's default
# `smooth` template draws each series twice: the smoothed line over the raw one.
DRAWN = {
    "warmup caption loss": (2, STEPS, 0),
    "AUROC per decoder layer": (2 * 2, LAYERS, 0),
    "accuracy per arm": (0, 0, len(ARMS)),
}


def _run(args: list[str], cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _chromium(page: Path, profile: Path, *mode: str) -> str:
    """Headless Chromium on `page` with no network: every host name fails to resolve."""
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1000,800",
        "--virtual-time-budget=10000",
        *mode,
        page.as_uri(),
    ]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[str, str, Path]:
    """(index.html as DVC wrote it, the DOM after load, a screenshot) of the tiny project."""
    root = tmp_path_factory.mktemp("project")
    for path, (rows, _) in PLOTS.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        lines = [",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]
        (root / path).write_text("\n".join(lines) + "\n")
    dvc_yaml = {
        "plots": [{path: spec} for path, (_, spec) in PLOTS.items()],
        "stages": {
            "report": {
                "cmd": "python report.py",
                "outs": [{path: {"cache": False}} for path in PLOTS],
            }
        },
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], root)
    _run([*dvc, "init", "-q"], root)
    shutil.copy(ROOT / ".dvc/config", root / ".dvc/config")
    name = _run([*dvc, "config", "plots.html_template"], root).strip()
    assert ROOT / ".dvc" / name == ROOT / DEFAULT_PATH  # .dvc/config points where setup writes
    write_page_template(root / ".dvc" / name)

    _run([*dvc, "plots", "show", "-o", "dvc_plots"], root)  # no flag: the config's template
    page = root / "dvc_plots/index.html"
    dom = _chromium(page, root / "dom-profile", "--dump-dom")
    shot = root / "dvc_plots.png"
    _chromium(page, root / "shot-profile", f"--screenshot={shot}")
    return page.read_text(), dom, shot


def _charts(dom: str) -> dict[str, str]:
    """title -> markup of each vega chart (<svg class="marks">) in the DOM, scripts removed."""
    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    charts: dict[str, list[str]] = {}
    for svg in re.findall(r'<svg[^>]*class="marks"[^>]*>.*?</svg>', dom, flags=re.S):
        title = html.unescape(
            re.search(
                r'class="mark-text role-title-text".*?>([^<]*)</text>', svg, flags=re.S
            ).group(1)
        )
        charts.setdefault(title, []).append(svg)
    assert all(len(svgs) == 1 for svgs in charts.values()), {t: len(s) for t, s in charts.items()}
    return {title: svgs[0] for title, svgs in charts.items()}


def test_page_carries_its_scripts_and_one_div_per_plot(rendered):
    page, _, _ = rendered
    assert "cdn.jsdelivr.net" not in page and not re.search(r"<script[^>]*\ssrc=", page)
    assert page.count("vegaEmbed('#") == len(PLOTS)


def test_each_plot_is_drawn_once_with_its_title_axes_and_data(rendered):
    _, dom, _ = rendered
    charts = _charts(dom)
    assert set(charts) == set(DRAWN)
    for _, spec in PLOTS.values():
        title = spec["title"]
        svg, (n_lines, n_vertices, n_bars) = charts[title], DRAWN[title]
        texts = {html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)}
        assert {spec["x_label"], spec["y_label"]} <= texts, (title, texts)
        lines = re.findall(r'<g class="mark-line role-mark[^"]*"[^>]*>(.*?)</g>', svg, flags=re.S)
        paths = [d for g in lines for d in re.findall(r'<path[^>]* d="([^"]+)"', g)]
        assert [p.count("L") + 1 for p in paths] == [n_vertices] * n_lines, title
        bars = re.findall(r'<g class="mark-rect role-mark[^"]*"[^>]*>(.*?)</g>', svg, flags=re.S)
        assert sum(len(re.findall(r"<path\b", g)) for g in bars) == n_bars, title


def test_screenshot_is_not_blank(rendered):
    _, _, shot = rendered
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)
    white = dict((c, n) for n, c in colours).get((255, 255, 255), 0)
    # A blank page is one colour; drawn charts bring antialiased text and lines.
    assert len(colours) > 100 and white < 0.97 * image.width * image.height
