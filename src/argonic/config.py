"""Run-time configuration: one TOML file (the role FHiCL plays in LArSoft), overridable on the command line.

The file has an ``[inference]`` table that chooses the ModelInterface and its parameters;
``argonic reco --config FILE --set inference.batch_size=1693`` overrides any key.
Defaults (``argonic reco`` with no file) run the shipped model locally with ONNX Runtime.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from argonic import ArgonicError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULTS: dict[str, Any] = {
    "inference": {
        "interface": "local",
        "batch_size": 256,
        "local": {"backend": "onnxruntime", "threads": 0},
        "remote": {"servers": ["localhost:8001"], "model_name": "emtrkmichelid"},
    },
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested configuration dict, creating tables as needed."""
    *tables, leaf = dotted.split(".")
    node = config
    for t in tables:
        node = node.setdefault(t, {})
        if not isinstance(node, dict):
            raise ArgonicError(f"cannot set {dotted!r}: {t!r} is not a table")
    node[leaf] = value


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Defaults, then the TOML file at ``path``, then ``key=value`` overrides (dotted keys)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        try:
            with open(path, "rb") as f:
                config = _merge(config, tomllib.load(f))
        except FileNotFoundError:
            raise ArgonicError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ArgonicError(f"{path}: not valid TOML: {exc}") from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArgonicError(f"override {item!r} is not of the form section.key=value")
        set_key(config, key.strip(), _parse_value(value.strip()))
    return config
