# Two entry points: `make quickstart` (the whole pipeline on the embedded default corpus)
# and `make test` (the test suite). Both install the package first.
PYTHON ?= python3
.PHONY: install lock quickstart test lint bench

install:
	PYTHON=$(PYTHON) bash scripts/install.sh

lock:
	PYTHON=$(PYTHON) bash scripts/make_lock.sh

quickstart: install
	$(PYTHON) -m atmorep quickstart

test: install
	$(PYTHON) -m pytest -q

lint:
	ruff check .
