"""Span and metric attribute names: the GenAI semantic conventions' and our own.

The `gen_ai.*` names are OpenTelemetry's GenAI semantic conventions (what a trace backend
recognizes as an LLM call); `llm_router.*` is this service's namespace. Names live here as
constants so a span, a metric and a test can never disagree on a spelling. Prompt text, answers
and keys are never attribute values.
"""

from __future__ import annotations

from typing import Final

# GenAI semantic conventions (client spans and metrics).
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
# (ruff's S105 reads "token" in a name as a password; these are token *types*.)
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"  # noqa: S105
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
OPERATION_CHAT: Final = "chat"
TOKEN_INPUT: Final = "input"  # noqa: S105
TOKEN_OUTPUT: Final = "output"  # noqa: S105

# gRPC server spans (RPC semantic conventions).
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"

# Ours.
APP: Final = "llm_router.app"
TASK: Final = "llm_router.task"
TIER: Final = "llm_router.tier"
MODEL: Final = "llm_router.model"
DIFFICULTY: Final = "llm_router.difficulty"
THRESHOLD: Final = "llm_router.threshold"
CLASSIFIER_VERSION: Final = "llm_router.classifier_version"
ARM: Final = "llm_router.arm"
PROPENSITY: Final = "llm_router.propensity"
REQUEST_ID: Final = "llm_router.request_id"
COST_USD: Final = "llm_router.cost_usd"
SERVED_FROM_CACHE: Final = "llm_router.served_from_cache"
PROMPT_CACHE_HIT: Final = "llm_router.prompt_cache_hit"
STATUS: Final = "llm_router.status"
ATTEMPT_OUTCOME: Final = "llm_router.attempt.outcome"
TTFT_MS: Final = "llm_router.ttft_ms"
OVERHEAD_MS: Final = "llm_router.overhead_ms"
SHADOW_OF: Final = "llm_router.shadow.of"
SHADOW_OUTCOME: Final = "llm_router.shadow.outcome"
CACHE_KIND: Final = "llm_router.cache.kind"
CALLLOG_DROP_REASON: Final = "llm_router.calllog.reason"
# Which operator alert (`alerts.COUNTS` keys: store_unavailable.fail_open, lease_lost, ...).
ALERT_EVENT: Final = "llm_router.alert"

# Child span names.
SPAN_CLASSIFY: Final = "classify"
SPAN_BUDGET_RESERVE: Final = "budget.reserve"
SPAN_BUDGET_SETTLE: Final = "budget.settle"
SPAN_SHADOW: Final = "shadow"
