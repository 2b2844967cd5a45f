# make demo | make test | make check | make bench | make soak: each sets up what is missing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):/usr/sbin:$(PATH)

.PHONY: setup servers test-servers demo test check bench soak clean

setup: $(VENV)/.installed servers

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

servers:
	scripts/install-servers.sh

# what only the tests use besides: faketime, ZooKeeper (and Java), a Prometheus Pushgateway
test-servers:
	scripts/install-servers.sh --test

demo: setup
	$(BIN)/python -m devkit.demo

test: setup test-servers
	$(BIN)/ruff check workflows targets devkit tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

# lint, types and the unit layer (no server), in well under a minute
check: $(VENV)/.installed
	$(BIN)/ruff check workflows targets devkit tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not servers"

bench: setup
	$(BIN)/python -m bench.run

# RunDaily through luigid SIGKILLed at random 20 times (SOAK_RUNS), then one clean rerun: exact rows, no staging table
soak: setup
	$(BIN)/python -m devkit.soak

clean:
	-$(BIN)/python -m devkit.demo --stop
	rm -rf $(VENV) .local *.egg-info
