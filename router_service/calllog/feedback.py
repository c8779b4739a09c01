"""Feedback: an app's quality score for one of its earlier requests, checked and logged.

The app must own the request (`calllog.owners`); an unknown id and another app's id get the
same NOT_FOUND, so no app learns anything about another's requests. Accepted feedback goes into
the call log next to the cost records, where `llm-router export` joins it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router_service.calllog.entries import Feedback
from router_service.calllog.writer import CallLog
from router_service.errors import NotFound, StoreUnavailable

__all__ = ["FeedbackRecorder"]


class FeedbackRecorder:
    def __init__(self, log: CallLog, *, clock: Callable[[], float] = time.time) -> None:
        self._log = log
        self._clock = clock

    async def record(
        self, app: str, request_id: str, score: float, label: str = "", comment: str = ""
    ) -> None:
        if not await self._log.owners.owns(app, request_id):
            raise NotFound(
                f"request_id {request_id!r}: no request of this app with that id within the "
                "feedback window"
            )
        feedback = Feedback(
            request_id=request_id,
            app=app,
            at=self._clock(),
            score=score,
            label=label,
            comment=comment,
        )
        if not self._log.submit(feedback):
            raise StoreUnavailable("the call log cannot take feedback right now; retry later")
