"""Metrics: GenAI token usage and durations, cost, routing mix, cache hits, gateway overhead.

`RouterMetrics` creates its instruments once from a `MeterProvider` (API type) and records one
`CallRecord` per call as a `CallObserver`: a handful of histogram and counter updates, no I/O.
Counters kept by other components (call-log drops, shadow calls, operator alerts such as the
store being unreachable) are read by observable
counters when the SDK collects, so those components stay free of OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from router_service.cost import micro_to_usd
from router_service.records import CallRecord, CallStatus
from router_service.telemetry import attributes as a

__all__ = [
    "ALERTS",
    "CACHE_HITS",
    "CALLLOG_DROPPED",
    "COST",
    "GATEWAY_OVERHEAD",
    "OPERATION_DURATION",
    "ROUTING_DECISIONS",
    "SHADOW_CALLS",
    "TIME_TO_FIRST_CHUNK",
    "TOKEN_USAGE",
    "RouterMetrics",
]

TOKEN_USAGE = "gen_ai.client.token.usage"  # noqa: S105 (a metric name, not a secret)
OPERATION_DURATION = "gen_ai.client.operation.duration"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
COST = "llm_router.cost"
ROUTING_DECISIONS = "llm_router.routing.decisions"
CACHE_HITS = "llm_router.cache.hits"
GATEWAY_OVERHEAD = "llm_router.gateway.overhead"
CALLLOG_DROPPED = "llm_router.calllog.dropped"
SHADOW_CALLS = "llm_router.shadow.calls"
ALERTS = "llm_router.alerts"
# The RPC conventions this service's server spans follow (rpc.system, .service, .method).
RPC_SERVER_DURATION = "rpc.server.duration"

# Bucket boundaries the GenAI conventions recommend.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
# The gateway's own share is sub-millisecond to a few milliseconds.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)

# RPCs in milliseconds: a refusal takes well under one, a streamed answer up to minutes.
_RPC_MS_BUCKETS = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
)

_SCOPE = "router_service"
_MS = 1000.0


class RouterMetrics:
    """The service's instruments; `observe` records a finished call."""

    def __init__(self, provider: MeterProvider, systems: Mapping[str, str] | None = None) -> None:
        # Configured provider name -> gen_ai.provider.name.
        self._systems = dict(systems or {})
        meter = metrics.get_meter(_SCOPE, meter_provider=provider)
        self._meter = meter
        self._tokens = meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Input and output tokens per provider call",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="Duration of each routed call, fallbacks included",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from the call's start to the first chunk of the answer",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            COST, unit="USD", description="Spend by app, task, model and tier"
        )
        self._decisions = meter.create_counter(
            ROUTING_DECISIONS, unit="{request}", description="Routed calls by tier, arm and task"
        )
        self._cache_hits = meter.create_counter(
            CACHE_HITS,
            unit="{request}",
            description="Calls with prompt-cache reads (kind=prompt) or served from the "
            "response cache (kind=response)",
        )
        self._rpc_duration = meter.create_histogram(
            RPC_SERVER_DURATION,
            unit="ms",
            description="Duration of each RPC this server handled, by status and calling app",
            explicit_bucket_boundaries_advisory=_RPC_MS_BUCKETS,
        )
        self._overhead = meter.create_histogram(
            GATEWAY_OVERHEAD,
            unit="s",
            description="Time the gateway itself adds to the time to first token",
            explicit_bucket_boundaries_advisory=_OVERHEAD_BUCKETS,
        )

    def rpc(self, service: str, method: str, code: int, app: str | None, seconds: float) -> None:
        """One RPC ended with gRPC status `code` after `seconds` (`app`: the caller, once
        authenticated): refusals of every kind, per app, whether or not a call was made."""
        attributes: dict[str, AttributeValue] = {
            a.RPC_SYSTEM: "grpc",
            a.RPC_SERVICE: service,
            a.RPC_METHOD: method,
            a.RPC_GRPC_STATUS_CODE: code,
        }
        if app is not None:
            attributes[a.APP] = app
        self._rpc_duration.record(seconds * 1000, attributes)

    def observe(self, record: CallRecord) -> None:
        decision = record.decision
        if decision is None:
            return  # refused as invalid before any decision: `rpc.server.duration` has it
        model = record.model or decision.model
        routed: dict[str, AttributeValue] = {
            a.APP: record.app,
            a.TASK: decision.task,
            a.TIER: decision.tier.value,
            a.ARM: decision.arm,
        }
        self._decisions.add(1, routed)
        if record.served_from_cache:
            # No provider was called: no GenAI client measurements, no spend.
            self._cache_hits.add(1, {a.APP: record.app, a.CACHE_KIND: "response"})
            return
        if record.status == CallStatus.REFUSED:
            return  # refused before any provider call: nothing for the GenAI client metrics
        # The catalog's name is ours (`llm_router.model`); `gen_ai.request.model` is the name
        # the provider was asked for (a deployment's `upstream_model` may differ), and
        # `gen_ai.provider.name` the provider asked, both those of the call's last request: the
        # serving one, or the last that failed. None sent: neither.
        last = record.last_request
        genai: dict[str, AttributeValue] = {
            a.GEN_AI_OPERATION_NAME: a.OPERATION_CHAT,
            a.MODEL: model if last is None else last.model,
        }
        provider = record.provider if last is None else last.provider
        if last is not None:
            genai[a.GEN_AI_REQUEST_MODEL] = last.request_model
        if provider:
            genai[a.GEN_AI_PROVIDER_NAME] = self._systems.get(provider, provider)
        if record.status != CallStatus.OK:
            genai[a.ERROR_TYPE] = record.status
        self._duration.record(record.latency_ms / _MS, genai)
        if record.model:
            # The provider's own name for the model, else the one it was asked for.
            asked = record.model if last is None else last.request_model
            genai[a.GEN_AI_RESPONSE_MODEL] = record.response_model or asked
            usage = record.usage
            self._tokens.record(usage.input_tokens, {**genai, a.GEN_AI_TOKEN_TYPE: a.TOKEN_INPUT})
            self._tokens.record(usage.output_tokens, {**genai, a.GEN_AI_TOKEN_TYPE: a.TOKEN_OUTPUT})
        if record.ttft_ms is not None:
            self._ttft.record(record.ttft_ms / _MS, genai)
        if record.cost_micro_usd:
            self._cost.add(
                micro_to_usd(record.cost_micro_usd),
                {
                    a.APP: record.app,
                    a.TASK: decision.task,
                    a.TIER: decision.tier.value,
                    a.MODEL: model,
                },
            )
        if record.prompt_cache_hit:
            self._cache_hits.add(1, {a.APP: record.app, a.CACHE_KIND: "prompt"})
        if record.overhead_ms is not None:
            self._overhead.record(record.overhead_ms / _MS)

    def watch_counts(
        self,
        name: str,
        unit: str,
        description: str,
        attribute: str,
        counts: Callable[[], Mapping[str, int]],
    ) -> None:
        """An observable counter reporting `counts()` (one series per key, as `attribute`)."""

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, {attribute: key}) for key, value in counts().items()]

        self._meter.create_observable_counter(
            name, callbacks=[observe], unit=unit, description=description
        )
