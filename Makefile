# lightface: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13 needs Python 3.10+; 2.8.0 is the last torch release for Python 3.9
TORCH_SPEC ?= $(shell $(PYTHON) -c 'import sys; print("torch==2.13.0" if sys.version_info >= (3, 10) else "torch==2.8.0")' 2>/dev/null || echo torch==2.13.0)
CUDA_VENV ?= .venv-cuda
CUDA_TORCH_SPEC ?= torch==2.14.1
CUDA_HOME ?= /usr/local/cuda
CUDA_ARCHS ?= 8.0;9.0
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
CSRC := $(sort $(wildcard csrc/*.cpp csrc/cpu/*.cpp csrc/cuda/*.cu csrc/*.h csrc/cpu/*.h csrc/cuda/*.cuh))
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install build test test-fast demo bench check-cuda clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel

$(VENV)/.installed: $(PY) pyproject.toml setup.py
	$(PY) -m pip install "$(TORCH_SPEC)" ninja pybind11 "setuptools>=77" wheel
	$(PY) -m pip install --no-build-isolation -e ".[test]"
	touch $@

$(VENV)/.built: $(VENV)/.installed $(CSRC)
	$(PY) setup.py -q build_ext --inplace
	touch $@

install: $(VENV)/.built
build: $(VENV)/.built

test: $(VENV)/.built
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.built
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(VENV)/.built
	$(PY) -m pipelines.demo $(DEMO_ARGS)

bench: $(VENV)/.built
	@for b in $$(ls benchmarks/*.py | grep -v '/_' | sed 's|benchmarks/||; s|\.py$$||'); do \
		echo "== python -m benchmarks.$$b"; $(PY) -m benchmarks.$$b || exit 1; done

# Compile-only check of the CUDA sources with the CUDA build of torch (no GPU needed).
check-cuda:
	@if [ ! -x "$(CUDA_HOME)/bin/nvcc" ] && ! command -v nvcc >/dev/null 2>&1; then \
		echo "check-cuda: no nvcc found (CUDA_HOME=$(CUDA_HOME)); skipping the CUDA compile check."; exit 0; fi; \
	set -e; \
	if [ ! -x $(CUDA_VENV)/bin/python ]; then $(PYTHON) -m venv $(CUDA_VENV); fi; \
	$(CUDA_VENV)/bin/python -m pip install -q "$(CUDA_TORCH_SPEC)" numpy ninja pybind11 "setuptools>=77" wheel; \
	rm -rf build/cuda-check; \
	CUDA_HOME=$(CUDA_HOME) PATH="$(CUDA_HOME)/bin:$$PATH" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" MAX_JOBS=2 \
		$(CUDA_VENV)/bin/python setup.py build_ext --build-temp build/cuda-check/tmp --build-lib build/cuda-check/lib; \
	ls build/cuda-check/lib/lightface/_C*.so; \
	echo "check-cuda: CUDA sources compiled for TORCH_CUDA_ARCH_LIST=$(CUDA_ARCHS)"

clean:
	rm -rf build lightface/_C*.so $(VENV)/.built
