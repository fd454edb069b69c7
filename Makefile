# Bastion: the two commands of the contract are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test test-sandbox run bench logs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## demo: set up, then run a scripted MCP client session against examples/policy.toml
demo: venv
	$(PY) examples/demo.py

## test: set up, then run the whole test suite
test: venv
	$(PY) -m pytest -q

## run: serve MCP over stdio with the example policy (for an MCP host or the Inspector)
run: venv
	$(VENV)/bin/bastion serve --policy examples/policy.toml

## logs: regenerate the deterministic sample logs
logs:
	$(PYTHON) examples/generate_logs.py

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
