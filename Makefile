# brevetti_pipe: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_ROOT ?= brevetti_platform
# pytest-xdist workers for `make test`: one per usable CPU, at most 4 (TEST_WORKERS=0 runs in this process);
# each test file runs whole, in order, on one worker
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1; print(0 if n < 2 else min(n, 4))" 2>/dev/null || echo 2)

.PHONY: demo test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test,joblib,submitit,ray,optuna,export,brevettiai,tensorboard,mlflow]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/brevetti-pipe recipe=vials_classification platform.root=$(DEMO_ROOT)
	@echo
	@echo "Outputs: $(DEMO_ROOT)/jobs/<job id>/artifacts/ (output.json, progress.jsonl, sample_identification.csv, model.tar.gz)"
	@ls -1dt $(DEMO_ROOT)/jobs/*/artifacts | head -n 1

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) brevetti_platform outputs multirun .pytest_cache
