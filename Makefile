# The README's two commands: `make train` (the chapter's run) and `make test`.
# Both create .venv on first use and install requirements.txt and the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Use the shared Fashion-MNIST folder when it sits beside the checkout.
SHARED_DATA := $(abspath ../shared/data/fashion-mnist)
export VGG_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/*.gz),$(SHARED_DATA),)

.PHONY: train test benchmark
$(VENV)/.installed: requirements.txt requirements-base.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

train: $(VENV)/.installed
	$(PY) -m vgg train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

benchmark: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py $(ARGS)
