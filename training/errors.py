"""Errors of the training package.

    TrainingError
    ├── DatasetError    an outcome file cannot be read, or a line of it is malformed
    └── NoDataError     after filtering, nothing is left to train or evaluate on

The command line turns each into a one-line message and exit status 2.
"""

from __future__ import annotations

__all__ = ["DatasetError", "NoDataError", "TrainingError"]


class TrainingError(Exception):
    """Base class of every error raised by the training package."""


class DatasetError(TrainingError):
    """An outcome file or one of its lines is not in the outcome format (SPEC.md)."""


class NoDataError(TrainingError):
    """No usable rows: the model pair is absent from the data, or every row was skipped."""
