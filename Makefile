# Two commands on a fresh machine: `make book` and `make test`. Both create .venv (unless a virtualenv is active)
# and install the pinned stack from requirements.txt once.
SHELL := /bin/bash
SCALE ?= default
VENV ?= .venv
ifdef VIRTUAL_ENV
PY := python
STAMP := $(VIRTUAL_ENV)/.cmg-installed
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmg-installed
endif
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export CMG_CACHE ?= $(CURDIR)/.cache

.PHONY: env test book data serve bench clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@if [ -z "$$VIRTUAL_ENV" ] && [ ! -x $(VENV)/bin/python ]; then python3 -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

data: $(STAMP)
	$(PY) -m cmg_lib data build --scale $(SCALE)

book: $(STAMP)
	$(PY) tools/build_book.py --scale $(SCALE)

serve:
	@echo "Serving the book at http://127.0.0.1:8000 (widgets need http, not file://)"
	$(PY) -m http.server 8000 -d _build/html

bench: $(STAMP)
	$(PY) benchmarks/pretrain_step.py --preset tiny --batch 64 --steps 5
	$(PY) benchmarks/pretrain_step.py --preset paper_avt --batch 8 --steps 5 --released-replay 1

clean:
	rm -rf _build book/executed
