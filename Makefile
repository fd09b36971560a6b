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
# The CDK app (aws-cdk-lib, jsii, cdk-nag) in its own venv too; it synthesizes with node.
CDK_VENV := .venv-cdk
CDK_STAMP := $(CDK_VENV)/.installed
export JUMPGATE_CDK_PYTHON := $(CURDIR)/$(CDK_VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
DATA_DIR ?= .jumpgate-demo
# make up's ports, if 3080, 3023 or 3024 are taken: make up WEB_PORT=4080 SSH_PORT=4023 TUNNEL_PORT=4024
WEB_PORT ?= 3080
SSH_PORT ?= 3023
TUNNEL_PORT ?= 3024
PYTEST_ARGS ?=
# Test processes: the suite mostly waits on daemons and sockets; one per core keeps timing-bound
# tests clear of each other (3 ran in 10-11 min, with load-bound flakes).
PYTEST_WORKERS ?= 2

.PHONY: up test parity lint fmt bench venv cfn-venv cdk-venv system-deps synth bundle clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

cfn-venv: $(CFN_STAMP)

# A tool's own venv from its requirements file: $(call tool-venv,DIR,REQUIREMENTS)
define tool-venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet -r $(2)
	@touch $(1)/.installed
endef

$(CFN_STAMP): infra/requirements-cfn.txt
	$(call tool-venv,$(CFN_VENV),$<)

cdk-venv: $(CDK_STAMP)

$(CDK_STAMP): infra/requirements-cdk.txt
	$(call tool-venv,$(CDK_VENV),$<)

# Debian packages the tests use, as TOOL:PACKAGE: OpenSSH client and server (the interop tests
# and the sshd parity suite use the real ones); rsync, git, curl and sudo (the parity suite's
# clients, and Ansible's become); node for synthesizing the CDK app. Only the missing ones are
# installed, in one apt-get call.
SYSTEM_DEPS := ssh-keygen:openssh-client /usr/sbin/sshd:openssh-server \
	/usr/lib/openssh/sftp-server:openssh-sftp-server rsync:rsync git:git curl:curl sudo:sudo useradd:passwd last:util-linux \
	node:nodejs

system-deps:
	@missing=""; \
	for dep in $(SYSTEM_DEPS); do \
	  command -v "$${dep%%:*}" >/dev/null || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

up: venv
	$(BIN)/jumpgate demo --data-dir $(DATA_DIR) --web-listen-addr 127.0.0.1:$(WEB_PORT) \
		--ssh-listen-addr 127.0.0.1:$(SSH_PORT) --tunnel-listen-addr 127.0.0.1:$(TUNNEL_PORT)

lint: venv
	$(BIN)/ruff format --check jumpgate tests bench infra
	$(BIN)/ruff check jumpgate tests bench infra
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff format jumpgate tests bench infra
	$(BIN)/ruff check --fix jumpgate tests bench infra

test: venv cfn-venv cdk-venv system-deps lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

# The whole platform as CloudFormation (cdk-nag checked) in infra/cdk/cdk.out; with
# BUNDLE=build/lambda (from make bundle) the functions' code is that bundle.
synth: cdk-venv system-deps
	cd infra/cdk && JUMPGATE_LAMBDA_BUNDLE=$(abspath $(BUNDLE)) ../../$(CDK_VENV)/bin/python app.py

# The functions' code for Lambda (Python 3.12, arm64), pip-installed without Docker and
# compiled to bytecode by a CPython 3.12 (python3.12 on PATH, pyenv's, or JUMPGATE_LAMBDA_PYTHON).
bundle: venv
	$(BIN)/python infra/cdk/bundle.py build/lambda

# The sshd parity suite alone: the same OpenSSH-client cases against Debian's sshd and a node,
# ending with its count of cases and differences (decision 0033).
parity: venv system-deps
	$(BIN)/pytest tests/net/test_sshd_parity.py --durations=10 $(PYTEST_ARGS)

bench: venv system-deps
	$(BIN)/python -m bench.certificates
	$(BIN)/python -m bench.login
	$(BIN)/python -m bench.noisy
	$(BIN)/python -m bench.sessions
	$(BIN)/python -m bench.slow_reader
	$(BIN)/python -m bench.tunnels
	$(BIN)/python -m bench.presence
	$(BIN)/python -m bench.presence --store dynamodb --nodes 1000
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.recording
	$(BIN)/python -m bench.agent_memory
	$(BIN)/python -m bench.coldstart
	$(BIN)/python -m bench.handlers
	$(BIN)/python -m bench.access

clean:
	rm -rf $(VENV) $(CFN_VENV) $(CDK_VENV) build infra/cdk/cdk.out .mypy_cache .ruff_cache .pytest_cache $(DATA_DIR)
