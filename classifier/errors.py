"""Errors of the classifier package.

    ClassifierError
    └── ArtifactError   an artifact directory is missing, corrupt, or built for other code

The server catches ``ArtifactError`` when it (re)loads an artifact and keeps serving with the
scorer it already has.
"""

from __future__ import annotations

__all__ = ["ArtifactError", "ClassifierError"]


class ClassifierError(Exception):
    """Base class of every error raised by the classifier package."""


class ArtifactError(ClassifierError):
    """An artifact cannot be used: missing files, bad metadata, or a feature-spec mismatch."""
