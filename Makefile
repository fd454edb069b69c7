# Bastion: the two commands of the contract are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LINT_STAMP := $(VENV)/.lint-installed-stamp
# A second venv on Debian's /usr/bin/python3 for the non-root run of the
# end-to-end tests: an unprivileged user must be able to execute its interpreter.
ROOTLESS_VENV  := .venv-rootless
ROOTLESS_STAMP := $(ROOTLESS_VENV)/.installed-stamp
SYSTEM_PYTHON  ?= /usr/bin/python3
# In a checkout, what the example policy writes (${state}/: audit log, intel
# database) goes to the git-ignored var/, as it always did; an installed copy
# uses bastion's default state directory (~/.local/state/bastion).
EXAMPLE := --policy examples/policy.toml --state-dir var

# OS packages, installed by `deps` when missing (as root; otherwise it prints the
# apt-get command and stops). Python packages come from PyPI into the venvs.
#   grep, ripgrep     the engines grep workers run (rg optional in production)
#   python3-venv      Debian's python3 has no venv/ensurepip without it
#   systemd-journal-remote  writes the example's sample journal (and the journal tests' files),
#                     as a journal collector does
# and for the tests:
#   util-linux        setpriv and unshare, for the non-root run
#   gcc, libc6-dev    the sandbox escape suite compiles hostile C programs
#   systemd           systemd-analyze checks the units in deploy/
#   python3-seccomp   only so the test comparing it with PyPI pyseccomp runs
#                     (nothing at run time needs it)
DEMO_PACKAGES := grep ripgrep python3-venv systemd-journal-remote
TEST_PACKAGES := $(DEMO_PACKAGES) util-linux gcc libc6-dev systemd python3-seccomp
# Decided from the goals, not per target, so `make demo test` installs the test set once.
DEPS_PACKAGES ?= $(if $(filter test test-sandbox deps,$(or $(MAKECMDGOALS),venv)),$(TEST_PACKAGES),$(DEMO_PACKAGES))

.PHONY: worker-user deps venv venv-rootless doctor demo test test-sandbox lint run bench soak logs intel journal fresh-check clean

## deps: install missing OS packages (root), or print the command to run (non-root)
deps:
	@sh tools/os-packages.sh $(DEPS_PACKAGES)

# deps is order-only: the venv is not rebuilt each time, but never before the OS has python3-venv.
$(STAMP): pyproject.toml | deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The distribution was called bastion-mcp before: drop it from a venv made then,
	@# or both would claim the bastion command.
	@$(PY) -m pip uninstall --quiet --yes bastion-mcp >/dev/null 2>&1 || true
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The same venv, with the lint extra (ruff and mypy, pinned in pyproject.toml) added.
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $(LINT_STAMP)

$(ROOTLESS_STAMP): pyproject.toml | deps
	test -x $(ROOTLESS_VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(ROOTLESS_VENV)
	@$(ROOTLESS_VENV)/bin/python -m pip uninstall --quiet --yes bastion-mcp >/dev/null 2>&1 || true
	$(ROOTLESS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(ROOTLESS_STAMP)

venv-rootless: $(ROOTLESS_STAMP)

## demo: set up, then run a scripted MCP client session against examples/policy.toml
# (demo.py writes the sample journal itself when it is missing, as it must in an installed copy)
demo: venv
	$(PY) examples/demo.py --state-dir var

## test: set up, then run the whole test suite (as root it includes the non-root run)
test: venv $(if $(filter 0,$(shell id -u)),venv-rootless)
	$(PY) -m pytest -q

## test-sandbox: run only the sandbox escape attempts (tests/sandbox) and print their results table
test-sandbox: venv
	$(PY) -m pytest -q -m sandbox tests/sandbox

## lint: ruff check, ruff format --check and mypy --strict, as configured in pyproject.toml
lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## worker-user: create the bastion-worker account a root broker runs workers as (root; sysusers.d)
worker-user:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make worker-user: run as root: sudo systemd-sysusers - < deploy/sysusers.d/bastion-worker.conf" >&2; exit 1; fi
	systemd-sysusers - < deploy/sysusers.d/bastion-worker.conf
	@id bastion-worker

## doctor: which sandbox layers this host supports, for the example policy
doctor: venv journal
	$(VENV)/bin/bastion doctor $(EXAMPLE)

## run: serve MCP over stdio with the example policy (for an MCP host or the Inspector)
run: venv journal
	$(VENV)/bin/bastion serve $(EXAMPLE)

## bench: benchmarks vs a naive single-process baseline (QUICK=1: 200 MB instead of 1 GB); prints a table + bench/results.json
bench: venv
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(PY) bench/run.py $(if $(QUICK),--quick)

## soak: many concurrent calls for SECONDS (default 120), then check audit chain and leftovers
soak: venv
	$(PY) bench/soak.py $(or $(SECONDS),120) $(or $(CONCURRENCY),16)

## logs: regenerate the deterministic sample logs
logs:
	$(PYTHON) examples/generate_logs.py

## intel: regenerate the deterministic sample intel feeds and .mmdb files
intel:
	$(PYTHON) examples/intel/generate_intel.py

## journal: write the sample journal (examples/journal/, git-ignored) with systemd-journal-remote, unless up to date
journal: | deps
	$(PYTHON) examples/generate_journal.py

## fresh-check: make demo from a clean clone in a fresh, cached Debian 12 root (root only; prints timings)
fresh-check:
	bash tools/fresh-check.sh

clean:
	rm -rf $(VENV) $(ROOTLESS_VENV) var build *.egg-info .pytest_cache
