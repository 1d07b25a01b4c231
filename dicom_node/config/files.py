"""The configuration's files: the shipped YAML file and, beside it, the site's local override
(``node.local.yaml`` for ``node.yaml``), merged and read as one document."""

from __future__ import annotations

from pathlib import Path

import yaml

from .node import DEFAULT_CONFIG_PATH, ConfigError, NodeConfig, parse_config


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> NodeConfig:
    """Read and validate the YAML file at `path`, with its local override if there is one."""
    return parse_config(read_document(path), config_source(path))


def config_files(path: Path | str) -> list[Path]:
    """`path` and, when it exists, its local override beside it (``node.local.yaml`` for
    ``node.yaml``): the site's settings, kept out of version control, so that the shipped
    default stays as released and an update of it never collides with an operator's edit."""
    path = Path(path)
    local = path.with_name(f"{path.stem}.local{path.suffix}")
    return [path, local] if local.is_file() else [path]


def config_source(path: Path | str) -> str:
    """The files read for `path`, as messages name them (``node.yaml + node.local.yaml``)."""
    return " + ".join(map(str, config_files(path)))


def _merged(base: object, override: object) -> object:
    """`override` on top of `base`: mappings merge key by key, anything else (a list, such as
    ``inference.routes``, or a value) replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    return {**base, **{key: _merged(base.get(key), value) for key, value in override.items()}}


def read_document(path: Path | str) -> object:
    """The YAML document at `path` with its local override merged in, as written (secrets not
    yet resolved)."""
    base, *override = config_files(path)
    document = _read_yaml(base)
    for local in override:
        found = _read_yaml(local)
        if found is not None and not isinstance(found, dict):
            raise ConfigError(f"{local}: the top level must be a mapping of keys")
        document = _merged(document or {}, found or {})
    return document


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return data
