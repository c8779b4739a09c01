"""Reading the QuotaFailure detail of a RESOURCE_EXHAUSTED status, as a client would."""

from __future__ import annotations

from collections.abc import Iterable

from google.rpc import error_details_pb2, status_pb2


def quota_violations(
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> list[error_details_pb2.QuotaFailure.Violation]:
    for key, value in trailing_metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            violations = []
            for detail in status.details:
                failure = error_details_pb2.QuotaFailure()
                if detail.Unpack(failure):
                    violations.extend(failure.violations)
            return violations
    return []
