#!/bin/sh
# Generates the Python gRPC code for protos/router/v1/router.proto into router_service/_proto,
# for `make setup` and the Dockerfile alike. PYTHON must have grpcio-tools and mypy-protobuf.
# grpc_tools writes absolute imports (`from router.v1 import ...`); they are made relative so
# the generated code lives inside router_service.
set -eu
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
out=router_service/_proto
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
PATH="$(dirname "$PYTHON"):$PATH" "$PYTHON" -m grpc_tools.protoc -Iprotos \
    --python_out="$build" --grpc_python_out="$build" --mypy_out="$build" --mypy_grpc_out="$build" \
    protos/router/v1/router.proto
rm -rf "$out" && mkdir -p "$out"
mv "$build"/router/v1/* "$out"/
sed -i -e 's/^from router\.v1 import router_pb2/from . import router_pb2/' \
    -e 's/^import router\.v1\.router_pb2$/from . import router_pb2/' \
    -e 's/router\.v1\.router_pb2\./router_pb2./g' "$out"/*.py "$out"/*.pyi
printf '"""Generated from protos/ at build time by protos/generate.sh; do not edit."""\n' > "$out/__init__.py"
