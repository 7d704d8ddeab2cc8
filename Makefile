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

.PHONY: env test book data serve bench clean browser-env browser-test

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

# The built book in a real browser (tests_browser/, not collected by `make test`): Debian's chromium driven by
# playwright, against _build/html served on 127.0.0.1. Build the book first (`make book SCALE=smoke`).
BROWSER_STAMP := $(dir $(STAMP)).cmg-browser-installed
CHROMIUM ?= /usr/bin/chromium

browser-env: $(BROWSER_STAMP)

$(BROWSER_STAMP): $(STAMP) tests_browser/requirements.txt
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "no $(CHROMIUM): install Debian's chromium (sudo apt-get install chromium)"; exit 1; fi; fi
	$(PY) -m pip install -q -r tests_browser/requirements.txt
	@touch $(BROWSER_STAMP)

browser-test: $(BROWSER_STAMP)
	CMG_CHROMIUM=$(CHROMIUM) $(PY) -m pytest tests_browser

data: $(STAMP)
	$(PY) -m cmg_lib data build --scale $(SCALE)

book: $(STAMP)
	$(PY) tools/build_book.py --scale $(SCALE)

serve:
	@echo "Serving the book at http://127.0.0.1:8000 (widgets need http, not file://)"
	$(PY) -m http.server 8000 -d _build/html

bench: $(STAMP)
	$(PY) benchmarks/pretrain_step.py --preset released_avt --batch 64 --steps 5
	$(PY) benchmarks/pretrain_step.py --preset paper_avt --batch 8 --steps 5 --released-replay 1

clean:
	rm -rf _build book/executed
