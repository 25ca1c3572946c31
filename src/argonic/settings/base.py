"""What every settings table shares: unknown keys refused, one error type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from argonic import ArgonicError


class SettingsError(ArgonicError):
    """A configuration that cannot be used: unknown key, wrong type, bad value, unreadable file."""


class _Table(BaseModel):
    """A TOML table: unknown keys refused, values checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def split_list(value: Any, separator: str = ",") -> Any:
    """A list setting given as one string (an environment variable, a flag): its items."""
    if isinstance(value, str):
        return [s.strip() for s in value.split(separator) if s.strip()]
    return value


def host_port(address: str) -> str:
    """``address`` if it is ``host:port``, else ValueError (pydantic's message)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f'{address!r} is not "host:port"')
    return address
