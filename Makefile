# make setup  - virtual environment in .venv, dependencies, generated gRPC code, buf (idempotent)
# make run    - setup, then serve on the embedded defaults in the foreground
# make test   - setup, then lint, type check and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTO_SRC := protos/router/v1/router.proto
PROTO_OUT := router_service/_proto
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test lint typecheck proto-lint unit bench train-default clean

setup: $(VENV)/.installed $(PROTO_OUT)/.generated $(BUF) redis-binaries

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[training,dev]'
	touch $@

# Generated once per change of the .proto, into one git-ignored package. grpc_tools writes
# absolute imports (`from router.v1 import ...`); they are made relative so the code lives
# inside router_service.
$(PROTO_OUT)/.generated: $(PROTO_SRC) $(VENV)/.installed
	rm -rf $(PROTO_OUT) .proto-build && mkdir -p $(PROTO_OUT) .proto-build
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=.proto-build --grpc_python_out=.proto-build \
		--mypy_out=.proto-build --mypy_grpc_out=.proto-build $(PROTO_SRC)
	mv .proto-build/router/v1/* $(PROTO_OUT)/ && rm -rf .proto-build
	sed -i -e 's/^from router\.v1 import router_pb2/from . import router_pb2/' \
		-e 's/^import router\.v1\.router_pb2$$/from . import router_pb2/' \
		-e 's/router\.v1\.router_pb2\./router_pb2./g' $(PROTO_OUT)/*.py $(PROTO_OUT)/*.pyi
	printf '"""Generated from protos/ at build time by `make setup`; do not edit."""\n' > $(PROTO_OUT)/__init__.py
	touch $@

$(BUF):
	npm install --silent --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

# The integration tests start their own redis-server processes (a standalone one when none
# is reachable, and a three-node cluster); install the binaries where they are missing.
redis-binaries:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq redis-server redis-tools)

run: setup
	$(BIN)/llm-router serve

proto-lint: $(BUF)
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
train-default: setup
	$(BIN)/llm-router train --data ../shared/data/routerbench-0shot/train.jsonl \
		--exclude ../shared/data/routerbench-0shot/test.jsonl \
		--weak mistralai/mixtral-8x7b-chat --strong gpt-4-1106-preview \
		--out classifier/artifacts/default

clean:
	rm -rf $(VENV) $(PROTO_OUT) .tools .mypy_cache .pytest_cache .ruff_cache
