# The map of the pipeline. Everything runs inside .venv, created with pinned versions on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PRESET ?= quick
SEEDS ?=
JOBS ?= 2
STUDY ?= fulldata
SINCE ?=
EXECUTOR ?= inline
EXECUTOR_ARGS ?=
DEVICE ?= cuda
LAB_ARGS ?=
export REPLICATION_DATA ?= $(CURDIR)/data

.DEFAULT_GOAL := help
.PHONY: help venv data test test-fast figures results bench gpu-check paper-dry study-time lab clean clean-results

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16
	@echo "variables: PRESET=a study of replication/experiments/ (smoke, quick, fulldata, paper, bf16check, longround; default quick), JOBS=2 (parallel runs), EXECUTOR=inline|local|slurm, EXECUTOR_ARGS, DEVICE=cuda (gpu-check)"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "python >= 3.10 needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)  ## create the virtual environment (pinned torch/torchvision pair and the rest)

data:  ## write CIFAR-10 into $REPLICATION_DATA from ../shared/data when that offline copy exists
	@if [ -f "$(REPLICATION_DATA)/cifar-10-batches-py/test_batch" ]; then echo "CIFAR-10 present in $(REPLICATION_DATA)"; \
	elif [ -f ../shared/data/make_cifar10.py ]; then $(PYTHON) ../shared/data/make_cifar10.py "$(REPLICATION_DATA)"; \
	else echo "No offline copy: runs download CIFAR with --download, or see README 'Data'."; fi

test: $(STAMP)  ## the whole test suite: unit, real-data and notebook (nbval, smoke preset) tests
	REPLICATION_PRESET=smoke $(PY) -m pytest tests notebooks --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

test-fast: $(STAMP)  ## unit tests only (seconds)
	$(PY) -m pytest tests -m "not realdata" -p no:cacheprovider

figures: $(STAMP) data  ## run every notebook with papermill (PRESET=quick) -> figures/, tables in results/
	$(PY) -m replication figures --preset $(PRESET) --jobs $(JOBS) $(if $(SEEDS),--seeds $(SEEDS))

results: $(STAMP) data  ## train every run the notebooks need (PRESET=quick; EXECUTOR=inline|local|slurm EXECUTOR_ARGS=...)
	$(PY) -m replication study --preset $(PRESET) --jobs $(JOBS) $(if $(SEEDS),--seeds $(SEEDS)) \
		--executor $(EXECUTOR) $(EXECUTOR_ARGS)

bench: $(STAMP) data  ## print throughput and overhead figures (benchmarks/, not tests)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/firefly_memory.py
	$(PY) benchmarks/precision.py

gpu-check: $(STAMP) data  ## on a CUDA machine: cuda vs cpu, img/s per precision, a growth step, paper-study projection
	$(PY) benchmarks/gpu_check.py --device $(DEVICE)

paper-dry: $(STAMP) data  ## the paper schedule's 11 rounds on CPU, shortened (Firefly + ours, ~6 min): per-round table
	$(PY) benchmarks/paper_dry.py --jobs $(JOBS)

study-time: $(STAMP)  ## CPU and wall time of a study's committed runs (STUDY=fulldata, JOBS=2, SINCE=a commit)
	$(PY) benchmarks/study_time.py $(STUDY) $(JOBS) $(SINCE)

lab: $(STAMP)  ## open JupyterLab on localhost in the project's environment (kernel: this venv's python3)
	$(VENV)/bin/jupyter lab notebooks/ --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:  ## remove build outputs (executed notebooks, caches); keeps results and the venv
	rm -rf build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

clean-results:  ## remove results of the smoke preset and all checkpoints (committed quick results stay)
	rm -rf results/checkpoints results/smoke
