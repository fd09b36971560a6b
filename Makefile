# The front door. Every target sets up what it needs: a fresh Debian machine with Python 3.11
# and root (or sudo) is enough.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# cfn-lint and aws-sam-translator pin an older pydantic than the platform's: their own venv.
CFN_VENV := .venv-cfn
CFN_STAMP := $(CFN_VENV)/.installed
export JUMPGATE_CFN_PYTHON := $(CURDIR)/$(CFN_VENV)/bin/python
DATA_DIR ?= .jumpgate-demo
PYTEST_ARGS ?=

.PHONY: up test lint fmt bench venv cfn-venv system-deps clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

cfn-venv: $(CFN_STAMP)

$(CFN_STAMP): infra/requirements-cfn.txt
	$(PYTHON) -m venv $(CFN_VENV)
	$(CFN_VENV)/bin/pip install --quiet --upgrade pip
	$(CFN_VENV)/bin/pip install --quiet -r infra/requirements-cfn.txt
	@touch $@

# OpenSSH client and server from Debian's packages: the interop tests use the real ones.
system-deps:
	@if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then \
	  echo "installing openssh-client and openssh-server (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends openssh-client openssh-server >/dev/null; \
	fi

up: venv
	$(BIN)/jumpgate demo --data-dir $(DATA_DIR)

lint: venv
	$(BIN)/ruff format --check jumpgate tests bench infra
	$(BIN)/ruff check jumpgate tests bench infra
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff format jumpgate tests bench infra
	$(BIN)/ruff check --fix jumpgate tests bench infra

test: venv cfn-venv system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: venv system-deps
	$(BIN)/python -m bench.certificates
	$(BIN)/python -m bench.login
	$(BIN)/python -m bench.sessions
	$(BIN)/python -m bench.tunnels
	$(BIN)/python -m bench.presence
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.recording
	$(BIN)/python -m bench.coldstart

clean:
	rm -rf $(VENV) $(CFN_VENV) .mypy_cache .ruff_cache .pytest_cache $(DATA_DIR)
