"""The canonical prompt prefix: tools and system prompt serialized byte-stably.

Provider prompt caches match on the exact leading bytes of a request. Apps that build the same
logical prefix with different key order, tool order or stray whitespace would miss them every
time; the router rewrites the prefix into one canonical form before calling any provider, and
hashes it so cache affinity can send equal prefixes to the same warm deployment.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from router_service.chat import ChatRequest, ToolSpec
from router_service.tokens import tokens_for_length

__all__ = ["CanonicalRequest", "canonicalize", "normalize_text"]

_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Line endings unified, trailing spaces dropped, runs of blank lines reduced to one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_RUNS.sub("\n\n", _TRAILING_SPACE.sub("", text)).strip()


# Schema keywords whose strings are prose for the model to read, where whitespace is layout.
# Every other string in a schema (enum members, const, default, pattern, examples, ...) is a
# value the caller's code may compare against, and is kept byte for byte.
_PROSE_KEYWORDS = frozenset({"description", "title"})


def _canonical_value(value: Any, prose: bool = False) -> Any:
    """Dictionaries with sorted keys and the prose of descriptions and titles normalized; list
    order is kept (it can matter), and so is every other string."""
    if isinstance(value, dict):
        return {key: _canonical_value(value[key], key in _PROSE_KEYWORDS) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical_value(item) for item in value]
    if prose and isinstance(value, str):
        return normalize_text(value)
    return value


@dataclass(frozen=True, slots=True)
class CanonicalRequest:
    request: ChatRequest
    # SHA-256 of the canonical prefix, hex; empty when the request has no tools or system.
    prefix_hash: str
    # The prefix's estimated size in tokens.
    prefix_tokens: int = 0


def canonicalize(request: ChatRequest) -> CanonicalRequest:
    tools = tuple(
        ToolSpec(
            name=tool.name,
            description=normalize_text(tool.description),
            parameters=_canonical_value(dict(tool.parameters)),
        )
        for tool in sorted(request.tools, key=lambda t: t.name)
    )
    messages = tuple(
        replace(m, content=normalize_text(m.content)) if m.role == "system" else m
        for m in request.messages
    )
    system = [m.content for m in messages if m.role == "system"]
    if not tools and not system:
        return CanonicalRequest(request=request, prefix_hash="")
    encoded = json.dumps(
        [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256()
    digest.update(encoded.encode())
    for text in system:
        digest.update(b"\x00")
        digest.update(text.encode())
    return CanonicalRequest(
        request=replace(request, tools=tools, messages=messages),
        prefix_hash=digest.hexdigest(),
        prefix_tokens=tokens_for_length(len(encoded) + sum(len(text) for text in system)),
    )
