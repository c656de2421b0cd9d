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

main: setup
	dvc repro
	python -m mmrpt.report.summary

lint: setup
	ruff check mmrpt flows tests

test: lint
	$(PY) -m pytest -q

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000
