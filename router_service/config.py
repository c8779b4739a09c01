"""The router's configuration: one YAML document validated into frozen, typed models.

Everything the service reads from files or the environment is read here, once, at start-up.
The rest of the code receives a `RouterConfig` and never looks at YAML or `os.environ` again.
Unknown keys are errors, so a misspelt option fails at start rather than being ignored.

Secrets never live in the config file: app keys appear only as SHA-256 hashes (or as the name of
an environment variable or mounted file that holds the key), provider API keys only as the name
of the variable or file that holds them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
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
    "load_config",
    "resolve_secret",
]


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(StrEnum):
    CHEAP = "cheap"
    FRONTIER = "frontier"


class Prices(Frozen):
    """USD per million tokens, as providers publish them."""

    input: Annotated[Decimal, Field(ge=0)]
    cached_input: Annotated[Decimal, Field(ge=0)]
    cache_write: Annotated[Decimal, Field(ge=0)]
    output: Annotated[Decimal, Field(ge=0)]


class Deployment(Frozen):
    """One place a model is served: a provider and the model's name there."""

    provider: str
    upstream_model: str | None = None


class ModelConfig(Frozen):
    tier: Tier
    prices: Prices
    context_window: Annotated[int, Field(gt=0)]
    # The most output tokens the model may be asked for (providers refuse more with a 400);
    # None: only the context window limits it.
    max_output_tokens: Annotated[int | None, Field(gt=0)] = None
    capabilities: tuple[str, ...] = ("streaming",)
    deployments: Annotated[tuple[Deployment, ...], Field(min_length=1)]
    # Models to try after the same tier's others when every one of them failed.
    fallbacks: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _provider_shorthand(cls, data: Any) -> Any:
        # `provider: sim` is shorthand for one deployment on that provider.
        if isinstance(data, dict) and "provider" in data:
            if "deployments" in data:
                raise ValueError("give either provider or deployments, not both")
            data = dict(data)
            data["deployments"] = [{"provider": data.pop("provider")}]
        return data


class FailureInjection(Frozen):
    """Makes the simulated provider fail, to exercise fallbacks and broken streams."""

    rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    mode: Literal["error_before_first_token", "mid_stream", "rate_limited"] = (
        "error_before_first_token"
    )


class SimulatedProviderConfig(Frozen):
    """A built-in provider that streams realistic answers with realistic latency and usage."""

    kind: Literal["simulated"]
    # Which real API's usage reporting to imitate: OpenAI-style automatic prefix caching
    # (no cache writes) or Anthropic-style explicit caching (cache writes billed).
    style: Literal["openai", "anthropic"] = "openai"
    ttft_ms: Annotated[float, Field(ge=0)] = 250.0
    tokens_per_second: Annotated[float, Field(gt=0)] = 80.0
    # Answers are this many tokens unless max_output_tokens is smaller.
    answer_tokens: Annotated[int, Field(gt=0)] = 120
    # Prefix cache: prefixes shorter than this are not cached, as with real providers.
    min_cacheable_tokens: Annotated[int, Field(ge=0)] = 1024
    prefix_cache_ttl_s: Annotated[float, Field(gt=0)] = 300.0
    failure: FailureInjection = FailureInjection()


class ProviderTimeouts(Frozen):
    """How long a provider call may take at each stage, in seconds.

    A call that has produced no token within `first_token` fails before its first token, so the
    router falls back to the next candidate. Once tokens stream, a gap longer than `idle` or a
    call longer than `total` breaks the stream. The caller's gRPC deadline bounds all of them.
    """

    connect: Annotated[float, Field(gt=0)] = 5.0
    first_token: Annotated[float, Field(gt=0)] = 30.0
    idle: Annotated[float, Field(gt=0)] = 30.0
    total: Annotated[float, Field(gt=0)] = 600.0


BaseUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$")]

# Credentials go in api_key_env / api_key_file, never in the file as a header.
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})


class HttpProviderConfig(Frozen):
    """What every provider reached over HTTP shares: where it is, its key, and its timeouts.

    The base URL is `base_url`, unless `base_url_env` names a variable that is set. The API key
    is read once at start-up from the variable `api_key_env` or the mounted file
    `api_key_file`; with neither, no key is sent (e.g. a local vLLM).
    """

    base_url: BaseUrl
    base_url_env: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    # Sent with every request, e.g. an organization or project header.
    headers: Mapping[str, str] = Field(default_factory=dict)
    # Off (the default): HTTP/1.1 on the router's lean transport (`providers.h1`), a fraction
    # of the CPU per streamed answer. On: httpx negotiates HTTP/2 where the provider offers it
    # (over TLS), for many concurrent streams on few connections.
    http2: bool = False
    # Stream answers (SSE); off: one JSON response per call, replayed as one delta.
    stream: bool = True
    timeouts: ProviderTimeouts = ProviderTimeouts()

    @model_validator(mode="after")
    def _no_inline_credentials(self) -> HttpProviderConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give at most one of api_key_env, api_key_file")
        for header in self.headers:
            if header.lower() in _CREDENTIAL_HEADERS:
                raise ValueError(
                    f"headers: {header} carries a credential; use api_key_env or api_key_file"
                )
        return self

    def resolved_base_url(self, environ: Mapping[str, str]) -> str:
        """The base URL without a trailing slash."""
        url = self.base_url
        if self.base_url_env is not None and environ.get(self.base_url_env):
            url = environ[self.base_url_env].strip()
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{self.base_url_env} must be an http:// or https:// URL")
        return url.rstrip("/")

    def resolved_api_key(self, environ: Mapping[str, str]) -> str | None:
        """The API key, or None when the provider needs none."""
        if self.api_key_env is None and self.api_key_file is None:
            return None
        return _read_secret(self.api_key_env, self.api_key_file, environ)


class OpenAIProviderConfig(HttpProviderConfig):
    """Any OpenAI-compatible chat completions API: OpenAI, Z.ai, Moonshot, DeepSeek, vLLM ..."""

    kind: Literal["openai"]
    base_url: BaseUrl = "https://api.openai.com/v1"
    # OpenAI's newer models want max_completion_tokens; most compatible servers max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"


class AnthropicProviderConfig(HttpProviderConfig):
    """The Anthropic Messages API."""

    kind: Literal["anthropic"]
    base_url: BaseUrl = "https://api.anthropic.com"
    api_version: str = "2023-06-01"
    # Cache markers are placed only on a prefix (tools + system) at least this long: shorter
    # prefixes are not cached by the provider, and a marker would only cost a cache write.
    cache_min_tokens: Annotated[int, Field(ge=0)] = 1024
    # Per model family: a key found in the upstream model name overrides cache_min_tokens
    # (the longest matching key wins).
    cache_min_tokens_by_model: Mapping[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {"haiku": 2048}
    )

    def cache_min_tokens_for(self, model: str) -> int:
        matches = [key for key in self.cache_min_tokens_by_model if key in model]
        if not matches:
            return self.cache_min_tokens
        return self.cache_min_tokens_by_model[max(matches, key=len)]


ProviderConfig = Annotated[
    SimulatedProviderConfig | OpenAIProviderConfig | AnthropicProviderConfig,
    Field(discriminator="kind"),
]


class CircuitBreakerConfig(Frozen):
    """Takes a failing deployment out for a while, per replica.

    After `failures` consecutive failures a deployment is skipped for `cool_down_s`; then one
    probe call is let through, and its outcome closes the breaker or opens it again. A 429 takes
    the deployment out until its Retry-After has passed (at most `max_retry_after_s`).
    """

    failures: Annotated[int, Field(gt=0)] = 5
    cool_down_s: Annotated[float, Field(gt=0)] = 30.0
    max_retry_after_s: Annotated[float, Field(gt=0)] = 300.0


# A difficulty threshold: a number in [0, 1], or the name of one of the classifier artifact's
# operating points (chosen on its training data, e.g. `quality_95`: the fewest frontier calls
# that keep 95% of the frontier model's quality), which stays meaningful across retraining.
Threshold = Annotated[float, Field(ge=0, le=1)] | Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]


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
    key_env: str | None = None
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


class ServerConfig(Frozen):
    listen: str = "127.0.0.1:50051"
    # SIGTERM: how long in-flight streams get to finish.
    grace_period_s: Annotated[float, Field(ge=0)] = 20.0
    # SIGTERM: how long health reports NOT_SERVING while new calls are still served, so load
    # balancers (Kubernetes endpoints) stop sending them before the server starts refusing.
    drain_delay_s: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:50051 or [::]:50051")
        return value


class ClassifierConfig(Frozen):
    # The artifact directory; None: the one shipped with the service.
    artifact: Path | None = None
    enabled: bool = True
    # The (weak, strong) model pair artifacts must be trained for; unset: any pair.
    model_pair: tuple[str, str] | None = None
    # Poll the artifact directory and load a new artifact when its files change.
    watch: bool = True
    watch_interval_s: Annotated[float, Field(gt=0)] = 2.0


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
    # Every key this service writes starts with this (then the app as a Cluster hash tag).
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "llmr"
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
        return url


class CallLogConfig(Frozen):
    """The call log: one cost record per call, written in batches off the request path.

    With Redis configured (see `store`) entries go to the Redis Stream `stream`; otherwise to
    JSONL files in `directory`, one per UTC day. A full queue or a sink that stays down drops
    entries and counts them; it never slows or fails a request.
    """

    enabled: bool = True
    directory: Path = Path("var/calllog")
    stream: Annotated[str, Field(min_length=1)] = "llm-router:v1:calllog"
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
    return hashlib.sha256(_read_secret(ref.key_env, ref.key_file, environ).encode()).digest()


def _read_secret(env: str | None, file: Path | None, environ: Mapping[str, str]) -> str:
    """A secret from an environment variable or a mounted file; errors never show its value."""
    if env is not None:
        value = environ.get(env)
        if not value:
            raise ConfigError(f"environment variable {env} is not set")
        return value
    assert file is not None
    try:
        value = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {file}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"key file {file} is empty")
    return value


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"] if part != "kind") or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


EMBEDDED_DEFAULTS = "embedded.yaml"


def load_config(path: Path | None = None) -> RouterConfig:
    """Read and validate the config at `path`, or the embedded defaults when it is None."""
    if path is None:
        source = f"embedded defaults ({EMBEDDED_DEFAULTS})"
        text = resources.files("router_service.defaults").joinpath(EMBEDDED_DEFAULTS).read_text()
    else:
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return RouterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
