# The README's two commands: `make train` (the chapter's run) and `make test`;
# `make notebook` opens the chapter's notebook in JupyterLab.
# Both create .venv on first use and install requirements.txt and the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Use the shared Fashion-MNIST folder when it sits beside the checkout.
SHARED_DATA := $(abspath ../shared/data/fashion-mnist)
export VGG_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/*.gz),$(SHARED_DATA),)

.PHONY: train lint test benchmark notebook
# PYTHON=python3.12 or python3.13 works too (docs/python.md; remove .venv when switching):
# requirements-nodeps.txt is MXNet for 3.13, which needs --no-deps, and nothing elsewhere.
$(VENV)/.installed: requirements.txt requirements-base.txt requirements-nodeps.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

train: $(VENV)/.installed
	$(PY) -m vgg train $(ARGS)

# ruff.toml says what is checked; make test (and so CI) lints first.
lint: $(VENV)/.installed
	$(PY) -m ruff check --no-cache .

test: lint
	$(PY) -m pytest -q $(ARGS)

benchmark: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py $(ARGS)

# JupyterLab from the venv, on this machine only (NOTEBOOK_IP=0.0.0.0 to serve others).
# The notebooks' kernel "python3" is written into the venv with this venv's interpreter,
# and JUPYTER_PATH puts it before any python3 kernel installed for another Python,
# so `import vgg` works in the notebook whatever else the machine has.
NOTEBOOK_IP ?= 127.0.0.1
notebook: $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name 'Python 3 (vgg)' >/dev/null
	JUPYTER_PATH=$(abspath $(VENV))/share/jupyter $(PY) -m jupyterlab --ServerApp.ip=$(NOTEBOOK_IP) \
	    $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/vgg.ipynb $(ARGS)
