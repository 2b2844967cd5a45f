# make demo | make test | make bench | make soak: each sets up what is missing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):/usr/sbin:$(PATH)

.PHONY: setup servers demo test bench soak clean

setup: $(VENV)/.installed servers

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

servers:
	scripts/install-servers.sh

demo: setup
	$(BIN)/python -m devkit.demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.run

# RunDaily through luigid SIGKILLed at random 20 times (SOAK_RUNS), then one clean rerun: exact rows, no staging table
soak: setup
	$(BIN)/python -m devkit.soak

clean:
	-$(BIN)/python -m devkit.demo --stop
	rm -rf $(VENV) .local *.egg-info
