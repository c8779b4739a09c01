"""Call-log entries to JSON and back: the one place that knows the on-disk format.

Every entry is one JSON object (a JSONL line, or the `e` field of a Redis Stream entry) with a
`kind` and a format version `v`. A cost record (`kind: call`) reads:

    {"kind": "call", "v": 1, "request_id": "…", "time": "2025-05-01T12:00:00.123456Z",
     "started_at": 1746100800.123456, "app": "demo", "task": "summarization",
     "decision": {"model", "tier", "difficulty", "threshold", "reasons", "classifier_version",
                  "arm", "propensity", "candidates", "max_output_tokens", "budget"},
     "model": "glm-5.2", "provider": "sim-openai", "response_model": "glm-5.2",
     "usage": {"input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"},
     "cost_usd": 0.000212, "cost_micro_usd": 212, "ttft_ms", "latency_ms", "overhead_ms",
     "served_from_cache": false, "prompt_cache_hit": false,
     "attempts": [{"model", "provider", "outcome", "error", "latency_ms", "upstream_model"}],
     "status": "ok", "error": "", "finish_reason": "stop", "metadata": {…},
     "messages": [{"role", "content"}] | null}

`messages` is null unless the app opted in to training data. A call refused as invalid before
any decision (status `invalid`) has `"decision": null` and an empty `task`. Feedback
(`kind: feedback`) and judge grades (`kind: grade`) are documented with `encode_feedback` and
`encode_grade`.
Encoding runs on the writer's background task, never on the request path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from router_service.calllog.entries import Feedback, Grade, GradedAnswer, LogEntry
from router_service.config import Tier
from router_service.cost import Usage, micro_to_usd
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.policy import BudgetState, Decision
from router_service.records import CallRecord

__all__ = ["FORMAT_VERSION", "MalformedEntry", "decode", "dumps", "encode", "loads"]

FORMAT_VERSION = 1


class MalformedEntry(ValueError):
    """A line or stream entry that is not a call-log entry this version can read."""


def _time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode_decision(d: Decision) -> dict[str, Any]:
    return {
        "model": d.model,
        "tier": d.tier.value,
        "difficulty": d.difficulty,
        "threshold": d.threshold,
        "reasons": list(d.reasons),
        "classifier_version": d.classifier_version,
        "arm": d.arm,
        "propensity": d.propensity,
        "candidates": list(d.candidates),
        "max_output_tokens": d.max_output_tokens,
        "budget": d.budget.value,
    }


def encode_call(record: CallRecord) -> dict[str, Any]:
    d = record.decision
    u = record.usage
    return {
        "kind": "call",
        "v": FORMAT_VERSION,
        "request_id": record.request_id,
        "time": _time(record.started_at),
        "started_at": record.started_at,
        "app": record.app,
        "task": "" if d is None else d.task,
        "decision": None if d is None else _encode_decision(d),
        "model": record.model,
        "provider": record.provider,
        "response_model": record.response_model,
        "usage": {
            "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "output_tokens": u.output_tokens,
        },
        "cost_usd": micro_to_usd(record.cost_micro_usd),
        "cost_micro_usd": record.cost_micro_usd,
        "ttft_ms": record.ttft_ms,
        "latency_ms": record.latency_ms,
        "overhead_ms": record.overhead_ms,
        "served_from_cache": record.served_from_cache,
        "prompt_cache_hit": record.prompt_cache_hit,
        "attempts": [
            {
                "model": t.model,
                "provider": t.provider,
                "outcome": t.outcome.value,
                "error": t.error,
                "latency_ms": t.latency_ms,
                "upstream_model": t.upstream_model,
            }
            for t in record.attempts
        ],
        "status": record.status,
        "error": record.error,
        "finish_reason": record.finish_reason,
        "metadata": dict(record.metadata),
        "messages": None
        if record.prompt is None
        else [{"role": role, "content": content} for role, content in record.prompt],
    }


def encode_feedback(feedback: Feedback) -> dict[str, Any]:
    """`{"kind": "feedback", "v", "request_id", "app", "time", "at", "score", "label",
    "comment"}`."""
    return {
        "kind": "feedback",
        "v": FORMAT_VERSION,
        "request_id": feedback.request_id,
        "app": feedback.app,
        "time": _time(feedback.at),
        "at": feedback.at,
        "score": feedback.score,
        "label": feedback.label,
        "comment": feedback.comment,
    }


def _answer(answer: GradedAnswer) -> dict[str, Any]:
    return {
        "model": answer.model,
        "score": answer.score,
        "cost_usd": micro_to_usd(answer.cost_micro_usd),
        "cost_micro_usd": answer.cost_micro_usd,
        "response": answer.response,
    }


def encode_grade(grade: Grade) -> dict[str, Any]:
    """`{"kind": "grade", "v", "request_id", "app", "task", "time", "at", "judge",
    "served": ANSWER, "shadow": ANSWER}`, each ANSWER `{"model", "score", "cost_usd",
    "cost_micro_usd", "response"}`."""
    return {
        "kind": "grade",
        "v": FORMAT_VERSION,
        "request_id": grade.request_id,
        "app": grade.app,
        "task": grade.task,
        "time": _time(grade.at),
        "at": grade.at,
        "judge": grade.judge,
        "served": _answer(grade.served),
        "shadow": _answer(grade.shadow),
    }


def encode(entry: LogEntry) -> dict[str, Any]:
    if isinstance(entry, CallRecord):
        return encode_call(entry)
    if isinstance(entry, Feedback):
        return encode_feedback(entry)
    return encode_grade(entry)


def dumps(entry: LogEntry) -> str:
    return json.dumps(encode(entry), ensure_ascii=False, separators=(",", ":"))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _decode_decision(task: str, d: Mapping[str, Any]) -> Decision:
    return Decision(
        task=task,
        tier=Tier(d["tier"]),
        model=str(d["model"]),
        candidates=tuple(str(c) for c in d["candidates"]),
        difficulty=_optional_float(d["difficulty"]),
        threshold=_optional_float(d["threshold"]),
        classifier_version=str(d["classifier_version"]),
        reasons=tuple(str(r) for r in d["reasons"]),
        max_output_tokens=int(d["max_output_tokens"]),
        arm=str(d["arm"]),
        propensity=float(d["propensity"]),
        budget=BudgetState(d["budget"]),
    )


def _decode_call(obj: Mapping[str, Any]) -> CallRecord:
    d = obj["decision"]
    u = obj["usage"]
    messages = obj["messages"]
    return CallRecord(
        request_id=str(obj["request_id"]),
        started_at=float(obj["started_at"]),
        app=str(obj["app"]),
        decision=None if d is None else _decode_decision(str(obj["task"]), d),
        usage=Usage(
            input_tokens=int(u["input_tokens"]),
            cached_input_tokens=int(u["cached_input_tokens"]),
            cache_write_tokens=int(u["cache_write_tokens"]),
            output_tokens=int(u["output_tokens"]),
        ),
        cost_micro_usd=int(obj["cost_micro_usd"]),
        ttft_ms=_optional_float(obj["ttft_ms"]),
        latency_ms=float(obj["latency_ms"]),
        served_from_cache=bool(obj["served_from_cache"]),
        attempts=tuple(
            AttemptRecord(
                model=str(t["model"]),
                provider=str(t["provider"]),
                outcome=AttemptOutcome(t["outcome"]),
                error=str(t["error"]),
                latency_ms=float(t["latency_ms"]),
                # Absent from entries written before it was recorded.
                upstream_model=str(t.get("upstream_model", "")),
            )
            for t in obj["attempts"]
        ),
        status=str(obj["status"]),
        error=str(obj["error"]),
        model=str(obj["model"]),
        provider=str(obj["provider"]),
        finish_reason=str(obj["finish_reason"]),
        prompt=None
        if messages is None
        else tuple((str(m["role"]), str(m["content"])) for m in messages),
        metadata={str(k): str(v) for k, v in obj["metadata"].items()},
        response_model=str(obj["response_model"]),
        overhead_ms=_optional_float(obj["overhead_ms"]),
    )


def _decode_answer(obj: Mapping[str, Any]) -> GradedAnswer:
    response = obj["response"]
    return GradedAnswer(
        model=str(obj["model"]),
        score=float(obj["score"]),
        cost_micro_usd=int(obj["cost_micro_usd"]),
        response=None if response is None else str(response),
    )


def decode(obj: Any) -> LogEntry:
    """The entry `obj` (a parsed JSON object) holds; `MalformedEntry` when it holds none."""
    if not isinstance(obj, dict):
        raise MalformedEntry("not a JSON object")
    version = obj.get("v")
    if version != FORMAT_VERSION:
        raise MalformedEntry(f"unsupported format version {version!r}")
    kind = obj.get("kind")
    try:
        if kind == "call":
            return _decode_call(obj)
        if kind == "feedback":
            return Feedback(
                request_id=str(obj["request_id"]),
                app=str(obj["app"]),
                at=float(obj["at"]),
                score=float(obj["score"]),
                label=str(obj["label"]),
                comment=str(obj["comment"]),
            )
        if kind == "grade":
            return Grade(
                request_id=str(obj["request_id"]),
                app=str(obj["app"]),
                task=str(obj["task"]),
                at=float(obj["at"]),
                judge=str(obj["judge"]),
                served=_decode_answer(obj["served"]),
                shadow=_decode_answer(obj["shadow"]),
            )
    # OverflowError: float() of an integer too large for one, int() of Infinity.
    # RecursionError: str() of a value nested nearly as deep as json.loads allows.
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise MalformedEntry(f"{kind} entry: {type(exc).__name__}: {exc}") from None
    raise MalformedEntry(f"unknown entry kind {kind!r}")


def loads(text: str | bytes) -> LogEntry:
    """The entry of one line or stream entry; `MalformedEntry` for anything else, including
    bytes that are not UTF-8 (a `ValueError`) and nesting too deep for the parser."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise MalformedEntry(f"not JSON: {exc}") from None
    except RecursionError:
        raise MalformedEntry("not JSON: nested too deeply") from None
    return decode(obj)
