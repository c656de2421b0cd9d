# Two commands on a fresh machine:  `make main` (set up + run the embedded pipeline)
#                                   `make test` (set up + lint + run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1

.PHONY: setup main test lint ui
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@date +%s > /tmp/mmrpt-setup-start
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@echo "setup took $$(( $$(date +%s) - $$(cat /tmp/mmrpt-setup-start) )) s"
	touch $@

# The Prefect flow over dvc.yaml's stages (each `dvc repro --single-item`, recorded in
# dvc.lock as by `dvc repro`), two at a time: the arms run side by side, one torch thread
# each, the longest chain first (760-832 s vs 1,132 s for `dvc repro`, docs/PERF.md). Its
# runs stay in .prefect/ for the UI.
main: setup
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect} PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 \
	  python -m flows.pipeline --max-parallel 2
	python -m mmrpt summary

lint: setup
	ruff check mmrpt flows tests bench docs/experiments
	ruff format --check mmrpt flows tests bench docs/experiments

test: lint
	$(PY) -m pytest -q --durations=15

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

# `dvc plots show` page template with vega, vega-lite and vega-embed inline, so plots render
# offline (.dvc/config: plots.html_template); generated from vl-convert-python, git-ignored.
DVC_PLOTS_PAGE := .dvc/plots_page.html
setup: $(DVC_PLOTS_PAGE)
$(DVC_PLOTS_PAGE): mmrpt/report/dvc_plots.py $(VENV)/.installed
	$(PY) -m mmrpt plots-template --out $@

# Headless Chromium (Debian) for tests/report/test_plots_page.py (the offline plots page).
.PHONY: browser
test: browser
browser:
	@command -v chromium >/dev/null || (export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null)
