"""The run configuration: one typed model, the single place where every setting and its default live.

A run is configured the way LArSoft configures a job with FHiCL: one TOML file chooses the
ModelInterface and all its parameters. Values are taken, each overriding the one before:

1. the defaults below;
2. the TOML file (``--config FILE``);
3. ``ARGONIC_*`` environment variables, nested with ``__``
   (``ARGONIC_INFERENCE__REMOTE__SERVERS=gpu1:8001,gpu2:8001``);
4. ``--set section.key=value`` (TOML values) and then the commands' dedicated flags.

Every table refuses unknown keys; a wrong key or type is a :class:`SettingsError` of one line
naming the key and what was expected. ``docs/configuration.md`` is generated from this module
(``python -m argonic.settings > docs/configuration.md``; a test fails when it is stale).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from argonic.settings.base import SettingsError
from argonic.settings.client import (
    EXECUTION_BATCH_SIZE,
    GRAPH_OPTIMIZATION,
    InferenceSettings,
    LocalSettings,
    RecoSettings,
    RemoteSettings,
)
from argonic.settings.server import ServerSettings
from argonic.settings.study import StudySettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "EXECUTION_BATCH_SIZE",
    "GRAPH_OPTIMIZATION",
    "InferenceSettings",
    "LocalSettings",
    "RecoSettings",
    "RemoteSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StudySettings",
    "load_settings",
    "settings_markdown",
    "validation_message",
]


_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("argonic_settings_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, below the environment and the command line."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class Settings(BaseSettings):
    """The whole configuration: ``[inference]``, ``[reco]``, ``[server]`` and ``[study]``."""

    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix="ARGONIC_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        validate_assignment=True,
    )

    inference: InferenceSettings = Field(
        default_factory=InferenceSettings, description="the ModelInterface"
    )
    reco: RecoSettings = Field(
        default_factory=RecoSettings, description="the chain after EmTrackMichelId"
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="`argonic serve`")
    study: StudySettings = Field(default_factory=StudySettings, description="`argonic study`")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)


def _parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, leaf = dotted.split(".")
    node = tree
    for t in tables:
        node = node.setdefault(t, {})
        if not isinstance(node, dict):
            raise SettingsError(f"cannot set {dotted!r}: {t!r} is not a table")
    node[leaf] = value


def _describe(error: dict[str, Any]) -> str:
    """One line for one pydantic error: the dotted key, what was expected, what was given."""
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, (str, int, float, bool)):
        return f"{key}: {message} (got {given!r})" if key else message
    return f"{key}: {message}" if key else message


def validation_message(exc: ValidationError) -> str:
    """The first problem of a ValidationError, as one line (plus a count of the others)."""
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _describe(errors[0]) + more


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Settings:
    """Defaults < TOML file < ``ARGONIC_*`` environment < ``key=value`` overrides < ``flags``.

    ``flags`` maps dotted keys to values (the commands' dedicated options; None = not given).
    """
    file_data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                file_data = tomllib.load(f)
        except FileNotFoundError:
            raise SettingsError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    given: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"override {item!r} is not of the form section.key=value")
        _set_dotted(given, key.strip(), _parse_value(value.strip()))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(given, key, value)
    token = _FILE_DATA.set(file_data)
    try:
        return Settings(**given)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise SettingsError(where + validation_message(exc)) from None
    except _SourceError as exc:  # an ARGONIC_* variable that is not valid JSON where needed
        raise SettingsError(f"environment: {exc}") from None
    finally:
        _FILE_DATA.reset(token)


def settings_markdown() -> str:
    """docs/configuration.md (see argonic.settings.docs)."""
    from argonic.settings.docs import settings_markdown as markdown

    return markdown()
