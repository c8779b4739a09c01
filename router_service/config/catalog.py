"""The catalog's configuration: models with their prices and deployments, the providers that
serve them (simulated, OpenAI-compatible, Anthropic) with their timeouts, and the circuit
breaker that takes a failing deployment out."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from router_service.config.base import ConfigError, EnvName, Frozen, Tier, read_secret

__all__ = [
    "AnthropicProviderConfig",
    "CircuitBreakerConfig",
    "Deployment",
    "FailureInjection",
    "HttpProviderConfig",
    "ModelConfig",
    "OpenAIProviderConfig",
    "Prices",
    "ProviderConfig",
    "ProviderTimeouts",
    "SimulatedProviderConfig",
]


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

    def genai_system(self, name: str) -> str:
        """`gen_ai.provider.name`: a simulator is named as configured (it is no real provider)."""
        return name


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
    base_url_env: EnvName | None = None
    api_key_env: EnvName | None = None
    api_key_file: Path | None = None
    # What spans and metrics call this provider (`gen_ai.provider.name`, OpenTelemetry GenAI
    # conventions: openai, anthropic, deepseek, azure.ai.openai, ...); default: the API it
    # speaks, its `kind`.
    genai_provider_name: Annotated[str, Field(pattern=r"^[a-z0-9_.]{1,64}$")] | None = None
    _genai_default: ClassVar[str]
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

    def genai_system(self, name: str) -> str:
        """`gen_ai.provider.name` for this provider (configured as `name`)."""
        return self.genai_provider_name or self._genai_default

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
        return read_secret(self.api_key_env, self.api_key_file, environ)


class OpenAIProviderConfig(HttpProviderConfig):
    """Any OpenAI-compatible chat completions API: OpenAI, Z.ai, Moonshot, DeepSeek, vLLM ..."""

    kind: Literal["openai"]
    _genai_default: ClassVar[str] = "openai"
    base_url: BaseUrl = "https://api.openai.com/v1"
    # The body field for the output limit. auto: max_completion_tokens at OpenAI's own API
    # (api.openai.com, as the base URL resolves), which every OpenAI chat model takes and its
    # reasoning models require; max_tokens anywhere else, as most compatible servers want.
    max_tokens_field: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"


# Anthropic's published minimum cacheable prompt lengths, by upstream model name (Bedrock's and
# Vertex's names contain these too). Models not named here: cache_min_tokens (1024, as for
# Sonnet 4.5, Sonnet 4, Opus 4.1 and Opus 4). Sonnet 4.6: 2048 in the newer copies of the table
# and as observed (anthropic-sdk-python#1194), 1024 in older ones.
_ANTHROPIC_CACHE_MIN_TOKENS: Mapping[str, int] = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-7": 4096,
    "claude-sonnet-4-6": 2048,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}


class AnthropicProviderConfig(HttpProviderConfig):
    """The Anthropic Messages API."""

    kind: Literal["anthropic"]
    _genai_default: ClassVar[str] = "anthropic"
    base_url: BaseUrl = "https://api.anthropic.com"
    api_version: str = "2023-06-01"
    # Cache markers are placed only on a prefix (tools + system) at least this long: the
    # provider does not cache a shorter one, and a marker there would do nothing (it costs no
    # cache write either).
    cache_min_tokens: Annotated[int, Field(ge=0)] = 1024
    # Per model: a key found in the upstream model name overrides cache_min_tokens (the
    # longest matching key wins). Setting it replaces the whole default table.
    cache_min_tokens_by_model: Mapping[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: dict(_ANTHROPIC_CACHE_MIN_TOKENS)
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
    the deployment out until its Retry-After has passed (or the rate-limit reset or "try again
    in" time the upstream gave instead; at most `max_retry_after_s`), or for `cool_down_s`
    when it said no time.
    """

    failures: Annotated[int, Field(gt=0)] = 5
    cool_down_s: Annotated[float, Field(gt=0)] = 30.0
    max_retry_after_s: Annotated[float, Field(gt=0)] = 300.0
