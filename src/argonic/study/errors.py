"""The study's error (its settings are argonic.settings.StudySettings)."""

from __future__ import annotations

from argonic import ArgonicError


class StudyError(ArgonicError):
    """The study could not run (a client failed, the server is unreachable)."""
