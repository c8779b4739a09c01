"""The call log: one cost record per call, feedback and judge grades, written off the request
path to a Redis Stream (with Redis) or daily JSONL files (embedded), and read back for
`llm-router export` and `llm-router report`."""

from __future__ import annotations

from pathlib import Path

from router_service.calllog.feedback import FeedbackRecorder
from router_service.calllog.owners import RequestOwners
from router_service.calllog.sinks import JsonlSink, RedisStreamSink, Sink
from router_service.calllog.writer import DEFAULT_BACKOFF, Backoff, CallLog
from router_service.config import DEFAULT_KEY_PREFIX, CallLogConfig
from router_service.store.redis import RedisClient

__all__ = ["Backoff", "CallLog", "FeedbackRecorder", "build_call_log"]


def build_call_log(
    config: CallLogConfig,
    redis: RedisClient | None,
    *,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> CallLog:
    """The call log the config asks for: Redis Stream when `redis` is given (its key follows
    `key_prefix`, the store's, unless the config names one), else JSONL."""
    sink: Sink
    stream = config.stream_key(key_prefix)
    if redis is not None:
        sink = RedisStreamSink(
            redis,
            stream,
            max_len=config.stream_max_len,
            owner_ttl_s=config.feedback_window_s,
        )
    else:
        sink = JsonlSink(Path(config.directory))
    owners = RequestOwners(config.remembered_requests, redis=redis, stream=stream)
    return CallLog(
        sink,
        owners,
        capacity=config.queue_size,
        batch_size=config.batch_size,
        flush_interval_s=config.flush_interval_s,
        backoff=backoff,
    )
