# Two images from one file:
#   docker build --target runtime -t llm-router .   the service (no scikit-learn)
#   docker build --target trainer -t llm-router-trainer .   the retraining job
FROM python:3.11-slim AS build
WORKDIR /src
# The same code generator as `make setup` (pyproject.toml pins it with the protobuf runtime).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "grpcio-tools>=1.85.1,<1.86" "mypy-protobuf>=3.6"
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY router_service/ router_service/
COPY classifier/ classifier/
COPY training/ training/
# Generate the gRPC code exactly as `make setup` does.
RUN PYTHON=/opt/venv/bin/python protos/generate.sh
RUN python -m venv /opt/runtime && /opt/runtime/bin/pip install --no-cache-dir . \
 && python -m venv /opt/trainer && /opt/trainer/bin/pip install --no-cache-dir '.[training]'

FROM python:3.11-slim AS runtime
RUN useradd --uid 10001 --user-group --no-create-home router \
 && install -d -o 10001 -g 10001 /var/lib/llm-router
# Relative paths in the config (the call log's JSONL directory, var/calllog) land here.
WORKDIR /var/lib/llm-router
COPY --from=build /opt/runtime /opt/runtime
ENV PATH=/opt/runtime/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
EXPOSE 50051
ENTRYPOINT ["llm-router"]
# A mounted config by default: the embedded defaults hold public development keys and must not
# serve on every interface by accident (`docker run IMAGE serve --listen 0.0.0.0:50051` still
# runs them, on purpose).
CMD ["serve", "--config", "/etc/llm-router/router.yaml"]

FROM python:3.11-slim AS trainer
RUN useradd --uid 10001 --user-group --no-create-home router \
 && install -d -o 10001 -g 10001 /var/lib/llm-router
WORKDIR /var/lib/llm-router
COPY --from=build /opt/trainer /opt/trainer
ENV PATH=/opt/trainer/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp
USER 10001
ENTRYPOINT ["llm-router"]
