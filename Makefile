# Every target sets itself up: a venv at .venv (pip) and node_modules (npm, the pinned CDK CLI).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1

.PHONY: demo emulator test lint synth bench setup clean

setup: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(STAMP)
	$(PY) -m emulator.demo

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest
	$(MAKE) --no-print-directory lint

lint: $(STAMP)
	$(PY) -m ruff check lambdas stacks tests emulator app.py
	$(PY) -m ruff format --check lambdas stacks tests emulator app.py
	$(PY) -m mypy lambdas/guardrail

synth: $(STAMP) $(NODE_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npx --no-install cdk synth --quiet

PORT ?= 5000
emulator: $(STAMP)
	$(PY) -m emulator.server --port $(PORT)

bench: $(STAMP)
	$(PY) -m emulator.bench

clean:
	rm -rf $(VENV) node_modules cdk.out
