"""The router's configuration: one YAML document validated into frozen, typed models.

The document may come in layers: `load_config(base, layer, ...)` lays each file over the ones
before it (a deployment keeps one site-wide file and adds, say, the TLS settings of one
cluster in a second), and only the result is validated.

Everything the service reads from files or the environment is read here, once, at start-up.
The rest of the code receives a `RouterConfig` and never looks at YAML or `os.environ` again.
Unknown keys are errors, so a misspelt option fails at start rather than being ignored.

Secrets never live in the config file: app keys appear only as SHA-256 hashes (or as the name of
an environment variable or mounted file that holds the key), provider API keys only as the name
of the variable or file that holds them.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from router_service.config.base import ConfigError, EnvName, Frozen, Tier, read_secret
from router_service.config.catalog import (
    AnthropicProviderConfig,
    CircuitBreakerConfig,
    Deployment,
    HttpProviderConfig,
    ModelConfig,
    OpenAIProviderConfig,
    Prices,
    ProviderConfig,
    ProviderTimeouts,
    SimulatedProviderConfig,
)

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "AdminConfig",
    "AnthropicProviderConfig",
    "AppConfig",
    "BudgetConfig",
    "CallLogConfig",
    "CircuitBreakerConfig",
    "ConfigError",
    "Deployment",
    "ExplorationConfig",
    "HttpProviderConfig",
    "LimitsConfig",
    "ModelConfig",
    "OpenAIProviderConfig",
    "Prices",
    "ProviderConfig",
    "ProviderTimeouts",
    "RateLimitConfig",
    "RouterConfig",
    "SimulatedProviderConfig",
    "StoreConfig",
    "TaskConfig",
    "TaskOverride",
    "Tier",
    "TlsConfig",
    "check_redis_url",
    "layered",
    "load_config",
    "resolve_secret",
]

# App names appear in keys, metrics and the call log; ':' is kept for `<app>:shadow`.
_APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# A difficulty threshold: a number in [0, 1], or the name of one of the classifier artifact's
# operating points (chosen on its training data, e.g. `quality_95`: the fewest frontier calls
# that keep 95% of the frontier model's quality), which stays meaningful across retraining.
def _threshold(value: object) -> float | str:
    # One validator, not a union of two, so that a bad value gets one message, not one per
    # member of the union.
    if isinstance(value, str) and re.fullmatch(r"[a-z0-9_]+", value):
        return value
    try:
        number = float(value) if isinstance(value, int | float | str) else -1.0
    except ValueError:
        number = -1.0
    if isinstance(value, bool) or not 0 <= number <= 1:
        raise ValueError(
            "expected a number from 0 to 1, or the name of an operating point of the "
            "classifier such as strong_share_10 or quality_95"
        )
    return number


Threshold = Annotated[float | str, PlainValidator(_threshold)]


class TaskConfig(Frozen):
    """A task class: how its requests are routed by default."""

    # The tier used when no classifier score is available.
    default_tier: Tier = Tier.CHEAP
    # Difficulty at or above which a request escalates to frontier; None: the classifier's
    # recommended threshold.
    threshold: Threshold | None = None
    # Every request of this task goes to frontier.
    always_frontier: bool = False
    # Escalate when the prompt is at least this many tokens (long-context reasoning).
    long_context_tokens: Annotated[int | None, Field(gt=0)] = None
    default_max_output_tokens: Annotated[int, Field(gt=0)] = 1024
    # Share of this task's traffic routed to the other tier, and share shadow-graded there;
    # None: the `exploration` section's value.
    exploration_rate: Annotated[float | None, Field(ge=0, le=1)] = None
    shadow_rate: Annotated[float | None, Field(ge=0, le=1)] = None


class TaskOverride(Frozen):
    """An app's changes to a task class; unset fields keep the task's values."""

    default_tier: Tier | None = None
    threshold: Threshold | None = None
    always_frontier: bool | None = None
    long_context_tokens: Annotated[int | None, Field(gt=0)] = None
    default_max_output_tokens: Annotated[int | None, Field(gt=0)] = None
    exploration_rate: Annotated[float | None, Field(ge=0, le=1)] = None
    shadow_rate: Annotated[float | None, Field(ge=0, le=1)] = None

    def apply(self, task: TaskConfig) -> TaskConfig:
        changes = self.model_dump(exclude_none=True)
        return task.model_copy(update=changes) if changes else task


class SecretRef(Frozen):
    """Where a secret comes from: its SHA-256, an environment variable, or a mounted file."""

    key_sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    key_env: EnvName | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [x for x in (self.key_sha256, self.key_env, self.key_file) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of key_sha256, key_env, key_file")
        return self


class BudgetConfig(Frozen):
    """An app's monthly budget (UTC calendar month); `Admin.SetBudget` overrides it at run time."""

    monthly_limit_usd: Annotated[Decimal, Field(ge=0)]
    # Share of the limit past which requests downgrade to cheap (unless frontier is required)
    # and an alert is emitted.
    soft_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8


class RateLimitConfig(Frozen):
    """Per-app rate limits, each a token bucket refilling evenly over a minute; None: no limit."""

    requests_per_minute: Annotated[int | None, Field(gt=0)] = None
    tokens_per_minute: Annotated[int | None, Field(gt=0)] = None


class AppConfig(SecretRef):
    """An internal app allowed to call the router."""

    tasks: Mapping[str, TaskOverride] = Field(default_factory=dict)
    # Store prompt text in the call log so it can become training data.
    training_data_opt_in: bool = False
    # Serve repeated temperature-0 requests from the response cache.
    response_cache: bool = False
    # None: no configured budget (spend is still tracked; Admin.SetBudget can set one).
    budget: BudgetConfig | None = None
    rate_limits: RateLimitConfig = RateLimitConfig()


class AdminConfig(Frozen):
    keys: tuple[SecretRef, ...] = ()


class LimitsConfig(Frozen):
    """Bounds on a single request; anything larger is refused before any work is done."""

    max_messages: Annotated[int, Field(gt=0)] = 256
    max_tools: Annotated[int, Field(ge=0)] = 128
    max_request_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    max_output_tokens: Annotated[int, Field(gt=0)] = 65_536
    max_metadata_entries: Annotated[int, Field(ge=0)] = 64


class TlsConfig(Frozen):
    """TLS on the gRPC port: app and admin keys travel as metadata, so without a service mesh
    the port must not be plaintext.

    The files are mounted secrets, never inline PEM: they are read at start-up (a file that
    cannot be used stops the start) and again whenever one changes, so a certificate rotated
    in place (cert-manager) reaches new connections without a restart.
    """

    # PEM certificate chain: the server's certificate first, then any intermediates.
    cert_file: Path
    # PEM private key of that certificate (not encrypted).
    key_file: Path
    # PEM CA certificate(s); set: mutual TLS, every client must present a certificate it
    # signed.
    client_ca_file: Path | None = None


class ServerConfig(Frozen):
    listen: str = "127.0.0.1:50051"
    # SIGTERM: how long in-flight streams get to finish.
    grace_period_s: Annotated[float, Field(ge=0)] = 20.0
    # SIGTERM: how long health reports NOT_SERVING while new calls are still served, so load
    # balancers (Kubernetes endpoints) stop sending them before the server starts refusing.
    drain_delay_s: Annotated[float, Field(ge=0)] = 0.0
    # None: plaintext (behind a mesh that encrypts, or on a laptop).
    tls: TlsConfig | None = None
    # A second, plaintext port serving only the standard health service (the same states,
    # drain included), for probes that cannot speak TLS such as Kubernetes' gRPC probes.
    health_listen: str | None = None

    @field_validator("listen", "health_listen", mode="before")
    @classmethod
    def _host_port(cls, value: object) -> object:
        if value is None:
            return None
        host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:50051 or [::]:50051")
        return value

    @model_validator(mode="after")
    def _two_ports(self) -> ServerConfig:
        # Port 0 (any free port, as in tests) may repeat; a fixed port cannot serve both.
        if self.health_listen == self.listen and not self.listen.endswith(":0"):
            raise ValueError("health_listen must be another address than listen")
        return self


class ClassifierConfig(Frozen):
    # The artifact directory; None: the one shipped with the service.
    artifact: Path | None = None
    enabled: bool = True
    # The (weak, strong) model pair artifacts must be trained for; unset: any pair.
    model_pair: tuple[str, str] | None = None
    # Poll the artifact directory and load a new artifact when its files change.
    watch: bool = True
    watch_interval_s: Annotated[float, Field(gt=0)] = 2.0
    # Admin.ReloadClassifier loads only artifacts inside this directory (symlinks resolved);
    # unset: any directory the process can read (a development setting).
    reload_root: Path | None = None


DEFAULT_KEY_PREFIX = "llmr"
LEGACY_CALL_LOG_STREAM = "llm-router:v1:calllog"


class StoreConfig(Frozen):
    """Where budgets, rate limits, caches and the call log live.

    `memory` keeps them in the process (one replica; the embedded default). `redis` shares them
    across replicas; the URL comes from `redis_url` or, when that is unset, from `REDIS_URL`.
    Setting `REDIS_URL` alone also selects Redis.
    """

    backend: Literal["memory", "redis"] | None = None
    redis_url: str | None = None
    # The URL names one node of a Redis Cluster (keys carry per-app hash tags, so every
    # script's keys live in one slot).
    cluster: bool = False
    # What to do when Redis cannot be reached: keep serving with local counters, or refuse.
    on_unavailable: Literal["fail_open", "fail_closed"] = "fail_open"
    # Every key this service writes starts with this (then the app as a Cluster hash tag; the
    # call log's stream, unless `call_log.stream` names one, is `<key_prefix>:calllog`).
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = DEFAULT_KEY_PREFIX
    # How long a budget reservation outlives its replica: live replicas renew their leases,
    # a dead one's reservations are released this long after its last renewal.
    reservation_lease_s: Annotated[float, Field(ge=1, le=3600)] = 60.0
    # How long an exact-match answer stays in the response cache.
    response_cache_ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    # How long a prompt prefix counts as warm in a provider's cache after a call used it
    # (providers keep cached prefixes about five minutes).
    prefix_warm_ttl_s: Annotated[float, Field(gt=0)] = 300.0
    # Longest a store operation may take before Redis counts as unreachable.
    operation_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # How often per-app statistics are written to the store.
    stats_flush_interval_s: Annotated[float, Field(gt=0)] = 1.0

    def resolved_redis_url(self, environ: Mapping[str, str]) -> str | None:
        """The Redis URL to use, or None for the in-process store."""
        if self.backend == "memory":
            return None
        url = self.redis_url or environ.get("REDIS_URL") or None
        if self.backend == "redis" and url is None:
            raise ConfigError(
                "store.backend is redis but neither store.redis_url nor REDIS_URL is set"
            )
        if url is None:
            return None
        return check_redis_url(url, "store.redis_url" if self.redis_url else "REDIS_URL")


def check_redis_url(url: str, where: str) -> str:
    """`url`, when redis-py can open it; else a `ConfigError` naming `where` but not the URL,
    which may hold a password."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(parts.scheme)
        parts.port  # noqa: B018 (a port that is not a number raises ValueError)
    except ValueError:
        raise ConfigError(
            f"{where} is not a Redis URL: expected redis://HOST:PORT[/DB], rediss://... "
            "(TLS) or unix:///path/to/socket"
        ) from None
    return url


class CallLogConfig(Frozen):
    """The call log: one cost record per call, written in batches off the request path.

    With Redis configured (see `store`) entries go to a Redis Stream (`stream_key`); otherwise
    to JSONL files in `directory`, one per UTC day. A full queue or a sink that stays down drops
    entries and counts them; it never slows or fails a request.
    """

    enabled: bool = True
    directory: Path = Path("var/calllog")
    # The Redis Stream's key; unset, it follows `store.key_prefix` (see `stream_key`).
    stream: Annotated[str, Field(min_length=1)] | None = None
    # Redis trims the stream to about this many entries (XADD MAXLEN ~).
    stream_max_len: Annotated[int, Field(gt=0)] = 1_000_000
    # Entries waiting to be written; past this, new ones are dropped and counted.
    queue_size: Annotated[int, Field(gt=0)] = 10_000
    batch_size: Annotated[int, Field(gt=0)] = 256
    # How long the writer lets a batch fill before writing it.
    flush_interval_s: Annotated[float, Field(ge=0)] = 0.2
    # How long after a call its app may still send feedback on it.
    feedback_window_s: Annotated[float, Field(gt=0)] = 3 * 24 * 3600.0
    # Request ids each replica remembers for feedback ownership checks (Redis remembers all
    # within the window).
    remembered_requests: Annotated[int, Field(gt=0)] = 100_000

    def stream_key(self, key_prefix: str) -> str:
        """The stream's Redis key (its requests' owner keys go beside it): `stream` when set,
        else `<key_prefix>:calllog`, so deployments sharing a Redis under different prefixes
        keep apart. On the default prefix it stays `llm-router:v1:calllog`, its key from before
        it followed the prefix: an upgrade neither splits that log nor loses its owners."""
        if self.stream is not None:
            return self.stream
        if key_prefix == DEFAULT_KEY_PREFIX:
            return LEGACY_CALL_LOG_STREAM
        return f"{key_prefix}:calllog"


class ExplorationConfig(Frozen):
    """A/B exploration and shadow grading; `tasks.<name>` (and apps' task overrides) may set
    their own `exploration_rate` and `shadow_rate`.

    Exploration routes a share of traffic to the other tier, with the propensity recorded.
    Shadow grading calls the other tier's model in the background for a share of the calls of
    apps that opted in to training data, and has `judge_model` grade both answers; its spend is
    recorded under the app `<app>:shadow`.
    """

    rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    shadow_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    judge_model: str | None = None
    # Shadow calls running at once; a sampled call beyond this is not shadowed (and counted).
    max_shadow_in_flight: Annotated[int, Field(gt=0)] = 8
    # The shadow budget (`<app>:shadow`) is this share of the app's own monthly limit, so
    # grading can never spend more than that; `Admin.SetBudget` on `<app>:shadow` overrides it.
    shadow_budget_share: Annotated[Decimal, Field(ge=0, le=1)] = Decimal("0.1")


class RouterConfig(Frozen):
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    providers: Mapping[str, ProviderConfig]
    models: Annotated[Mapping[str, ModelConfig], Field(min_length=1)]
    tasks: Mapping[str, TaskConfig]
    apps: Mapping[str, AppConfig] = Field(default_factory=dict)
    admin: AdminConfig = AdminConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    store: StoreConfig = StoreConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    call_log: CallLogConfig = CallLogConfig()
    exploration: ExplorationConfig = ExplorationConfig()

    @model_validator(mode="after")
    def _references_resolve(self) -> RouterConfig:
        if "default" not in self.tasks:
            raise ValueError("tasks: a 'default' task class is required")
        for name, model in self.models.items():
            for deployment in model.deployments:
                if deployment.provider not in self.providers:
                    raise ValueError(
                        f"models.{name}: provider {deployment.provider!r} is not in providers"
                    )
            for fallback in model.fallbacks:
                if fallback not in self.models:
                    raise ValueError(f"models.{name}.fallbacks: unknown model {fallback!r}")
        for tier in Tier:
            if not any(m.tier is tier for m in self.models.values()):
                raise ValueError(f"models: at least one {tier.value} model is required")
        for app_name, app in self.apps.items():
            if not _APP_NAME.fullmatch(app_name):
                # ':' is the router's own: `<app>:shadow` is an app's shadow-grading budget.
                raise ValueError(
                    f"apps: {app_name!r} is not an app name: 1-64 letters, digits, _ . -"
                )
            for task in app.tasks:
                if task not in self.tasks:
                    raise ValueError(f"apps.{app_name}.tasks: unknown task class {task!r}")
        return self

    @model_validator(mode="after")
    def _shadow_has_a_judge(self) -> RouterConfig:
        judge = self.exploration.judge_model
        if judge is not None and judge not in self.models:
            raise ValueError(f"exploration.judge_model: unknown model {judge!r}")
        rates = [task.shadow_rate for task in self.tasks.values()]
        rates += [o.shadow_rate for app in self.apps.values() for o in app.tasks.values()]
        shadowing = self.exploration.shadow_rate > 0 or any((r or 0) > 0 for r in rates)
        if shadowing and judge is None:
            raise ValueError("exploration: a shadow_rate above 0 needs a judge_model")
        return self


def resolve_secret(ref: SecretRef, environ: Mapping[str, str]) -> bytes:
    """The SHA-256 digest of the secret `ref` points at."""
    if ref.key_sha256 is not None:
        return bytes.fromhex(ref.key_sha256)
    return hashlib.sha256(read_secret(ref.key_env, ref.key_file, environ).encode()).digest()


# Pydantic's words for a value that does not match a field's pattern quote the regular
# expression; these say what the value should be.
_PATTERN_HINTS = {
    "base_url": "must be an http:// or https:// URL, e.g. https://api.openai.com/v1",
    "key_sha256": "must be the key's SHA-256 as 64 lowercase hex digits "
    "(printf %s KEY | sha256sum)",
}


def _keys_at(path: list[str]) -> set[str]:
    """The keys the section at `path` takes (of every kind, where a union has several)."""
    kinds: list[Any] = [RouterConfig]
    for part in [*path, None]:
        found: list[Any] = []
        for annotated in kinds:
            kind = get_args(annotated)[0] if get_origin(annotated) is Annotated else annotated
            for member in get_args(kind) if get_origin(kind) in (Union, UnionType) else [kind]:
                origin = get_origin(member)
                if isinstance(member, type) and issubclass(member, Frozen):
                    if part is None:
                        found.extend(member.model_fields)
                    elif part in member.model_fields:
                        found.append(member.model_fields[part].annotation)
                elif part is not None and origin in (Mapping, dict, tuple):
                    found.append(get_args(member)[-1 if origin is not tuple else 0])
        kinds = found
    return set(kinds)


def _path(loc: tuple[int | str, ...], raw: Any) -> list[str]:
    """`loc` as the keys the file has: without the parts pydantic adds for a union's member
    (`providers.x.openai.base_url` is `providers.x.base_url`), found by following `raw`."""
    parts, node = [], raw
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_file = isinstance(node, Mapping) and part in node
        if in_file or (isinstance(node, list) and isinstance(part, int) and part < len(node)):
            node = node[part]
        elif not last or not isinstance(node, Mapping):
            continue  # a union member's tag, not a key of the file
        parts.append(str(part))
    return parts


def _describe(error: ValidationError, source: str, raw: Any) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        path = _path(item["loc"], raw)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(path[-1], _keys_at(path[:-1]), n=1)
            message = "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
        elif item["type"] == "missing":
            message = "missing (this key is required)"
        elif item["type"] == "string_pattern_mismatch" and path and path[-1] in _PATTERN_HINTS:
            message = _PATTERN_HINTS[path[-1]]
        if not path and re.match(r"[\w.-]+: ", message):
            lines.append(f"  {message}")  # a check of the whole file that names the key
        else:
            lines.append(f"  {'.'.join(path) or '(top level)'}: {message}")
    return "\n".join(lines)


EMBEDDED_DEFAULTS = "embedded.yaml"


def layered(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `layer` laid over it, neither changed: mappings merge key by key, any other
    value in `layer` (a list, a scalar) replaces what `base` has, and a null removes the key
    (its default applies again)."""
    out = copy.deepcopy(dict(base))
    for key, value in layer.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = layered(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's own text places the error in "<unicode string>": give the file instead.
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return raw


def load_config(*paths: Path) -> RouterConfig:
    """Read the config files `paths`, each laid over the ones before it (`layered`), and
    validate the result; no paths: the embedded defaults."""
    if not paths:
        source = f"embedded defaults ({EMBEDDED_DEFAULTS})"
        text = resources.files("router_service.defaults").joinpath(EMBEDDED_DEFAULTS).read_text()
        raw = _read_mapping(text, source)
    else:
        source = " + ".join(str(path) for path in paths)
        raw = {}
        for index, path in enumerate(paths):
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
            layer = _read_mapping(text, str(path))
            # The first file is the config as written (a null in it means null).
            raw = layered(raw, layer) if index else layer
    try:
        return RouterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, raw)) from None
