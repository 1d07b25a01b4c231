"""The node's configuration: one YAML file and its local override, validated at start
(`node.py`; the files and their merging in `files.py`), with the `http.dicomweb` section in
`dicomweb.py`.

The settings types of every part of the node live here, below everything that reads them; the
de-identification options are `deid`'s own (`deid.settings`) and the FHIR client's are
`fhir_bridge`'s, and this package takes them from there. Imports nothing else of the node.
"""

from .files import config_files, config_source, load_config, read_document
from .node import (
    BUILTIN_BUNDLES,
    DEFAULT_CONFIG_PATH,
    FHIR_DESTINATION,
    ConfigError,
    DicomAddress,
    DicomConfig,
    DicomTlsConfig,
    DuplicatePolicy,
    HttpConfig,
    InferenceConfig,
    JobEngine,
    NodeConfig,
    OutboxConfig,
    PeerConfig,
    RouteConfig,
    parse_config,
)
from .secrets import findings as secret_findings

__all__ = [
    "BUILTIN_BUNDLES",
    "DEFAULT_CONFIG_PATH",
    "FHIR_DESTINATION",
    "ConfigError",
    "DicomAddress",
    "DicomConfig",
    "DicomTlsConfig",
    "DuplicatePolicy",
    "HttpConfig",
    "InferenceConfig",
    "JobEngine",
    "NodeConfig",
    "OutboxConfig",
    "PeerConfig",
    "RouteConfig",
    "config_files",
    "config_source",
    "load_config",
    "parse_config",
    "read_document",
    "secret_findings",
]
