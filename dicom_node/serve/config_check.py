"""The checks of a configuration file beyond its keys: what `check-config` runs and what a reload
of the running node runs, so both refuse a file with the same message.

Besides validation: secret files others may read, the FHIR client's key, the HTTP side's TLS and
JWKS files, the model bundles the routes name, and the TLS files of the peers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from inference.bundle import Bundle

from ..config import ConfigError, NodeConfig, config_source, parse_config, read_document
from ..config import secret_findings as find_secrets
from ..dimse.tls import client_args
from ..jobs.bundles import load_bundles
from ..outbox.destinations.fhir_server import open_fhir_client
from .http_app import check_http

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedConfiguration:
    config: NodeConfig
    #: secrets written in the file (a warning, not an error)
    warnings: list[str]
    #: the HTTP side in one line
    http: str
    bundles: dict[str, Bundle]


def _secret_warnings(document: object, config: NodeConfig) -> list[str]:
    """A warning per secret written in the file; key and secret files others may read refused."""
    found = find_secrets(document)
    if config.deidentification.key_file is None:
        found.check_file("deidentification.key_file (default)", config.pseudonym_key_file)
    if found.readable_by_others:
        raise ConfigError("; ".join(found.readable_by_others))
    return [
        f"{key} is written in the configuration file: "
        f"give {key.rsplit('.', 1)[-1]}_file or {key.rsplit('.', 1)[-1]}_env instead"
        for key in found.inline
    ] + [
        f"{url} carries a password written in the configuration file: leave it out of the URL "
        f"and give {secret}_file or {secret}_env instead"
        for url, secret in found.url_passwords
    ]


def check_configuration(path: Path | str) -> CheckedConfiguration:
    """Read and check the configuration at `path` (with its local override); ConfigError names
    the first problem."""
    document = read_document(path)
    config = parse_config(document, config_source(path))
    warnings = _secret_warnings(document, config)
    open_fhir_client(config)  # reads the private key, if any
    http = check_http(config.http)
    bundles = load_bundles(config.inference)
    for peer in config.peers.values():
        client_args(config, peer)  # a peer's CA file, the node's certificate
    return CheckedConfiguration(config, warnings, http, bundles)


def checked_config(path: Path) -> NodeConfig:
    """`check_configuration` for a reload: the configuration, its warnings logged."""
    checked = check_configuration(path)
    for warning in checked.warnings:
        log.warning("%s", warning)
    return checked.config
