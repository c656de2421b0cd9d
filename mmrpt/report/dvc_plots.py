"""An offline page template for `dvc plots show` (and `dvc plots diff`).

DVC fills its default page (dvc_render.html.PAGE_HTML) with <script> tags that load vega,
vega-lite and vega-embed from a CDN, so `dvc_plots/index.html` is blank without internet.
This module writes a page template that carries the three libraries inline instead, taken from
the installed `vl-convert-python` package (`vl_convert.javascript_bundle()`, ~0.9 MB of
minified JavaScript), so every page DVC writes is one self-contained file that renders offline.

How DVC uses it (dvc/commands/plots.py, dvc_render/html.py): `plots.html_template` in
.dvc/config names the file, relative to .dvc/; DVC reads it and replaces `{plot_divs}` with one
<div> per plot (each calls `vegaEmbed`), `{refresh_tag}` with an optional <meta refresh> and
`{scripts}` with the CDN tags. Departures from DVC's default page:
- no `{scripts}` placeholder, so no CDN tag: vega plots only (this project has no plotly plots).
- vega-embed 7 (DVC's page loads 6.18), which draws SVG rather than canvas by default: titles
  and axis names are text in the page, searchable and checked by tests/report/test_plots_page.py.
- Vega-Lite 5 (VEGA_LITE below), the major version of DVC's plot templates ($schema v5).

`make setup` writes the file (`python -m mmrpt plots-template`); it is generated, so git
ignores it. If it is missing, DVC fails with "HTML template has to contain '{plot_divs}'".
"""

from __future__ import annotations

from pathlib import Path

import vl_convert

# Where .dvc/config's `plots.html_template = plots_page.html` points (DVC resolves it in .dvc/).
DEFAULT_PATH = Path(".dvc/plots_page.html")
VEGA_LITE = "v5.21"

# The placeholders dvc_render.html.HTML.embed replaces by plain string substitution.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega-embed %(embed)s, vega-lite %(lite)s, vega %(vega)s: inline, from
         vl-convert-python %(vlc)s (mmrpt/report/dvc_plots.py); no network needed. -->
    <script>
(function () {  // keeps the bundle's top-level names (n, t, ...) out of the page's globals
%(bundle)s
})();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page_template(vl_version: str = VEGA_LITE) -> str:
    """The HTML page template for DVC's `plots.html_template`, with the scripts inline."""
    bundle = vl_convert.javascript_bundle(vl_version=vl_version)
    # The bundle goes inside a <script> and through DVC's placeholder substitution unchanged.
    for bad in ("</script", "<!--", *PLACEHOLDERS):
        if bad in bundle:
            raise ValueError(f"vl-convert's JavaScript bundle contains {bad!r}: cannot inline it")
    return PAGE % {
        "bundle": bundle,
        "embed": vl_convert.get_vega_embed_version(),
        "lite": vl_version,
        "vega": vl_convert.get_vega_version(),
        "vlc": _version("vl-convert-python"),
    }


def write_page_template(path: str | Path = DEFAULT_PATH, vl_version: str = VEGA_LITE) -> Path:
    """Write the page template to `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page_template(vl_version), encoding="utf8")
    return path


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
