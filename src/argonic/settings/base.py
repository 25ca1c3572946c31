"""What every settings table shares: unknown keys refused, one error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from argonic import ArgonicError


class SettingsError(ArgonicError):
    """A configuration that cannot be used: unknown key, wrong type, bad value, unreadable file."""


class _Table(BaseModel):
    """A TOML table: unknown keys refused, values checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
