"""What every step of a job shares: the context a worker process opens once (configuration,
index, storage, outbox, pseudonyms, bundles) and the series it works on. In its own module so
the per-study run, the results and the FHIR reports all take it from below."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from inference.bundle import Bundle

from ..config import NodeConfig, RouteConfig
from ..deid.deidentify import Deidentifier
from ..deid.pseudonyms import Pseudonymizer, load_or_create_key
from ..index.database import open_engine
from ..index.pseudonyms import PseudonymTable
from ..outbox.queue import Outbox, open_outbox
from ..store.storage import StorageArea
from .bundles import load_bundles, model_device


class StudyJobError(Exception):
    """The job cannot complete; the message says which file and why, without patient data."""


@dataclass
class StudyJobContext:
    """What a worker process opens once and reuses for every job it runs."""

    config: NodeConfig
    engine: Engine
    storage: StorageArea
    outbox: Outbox
    pseudonyms: Pseudonymizer
    mapping: PseudonymTable
    bundles: dict[str, Bundle]
    _deidentifiers: dict[str, Deidentifier] = field(default_factory=dict)

    @classmethod
    def open(cls, config: NodeConfig) -> StudyJobContext:
        engine = open_engine(config.storage.database_url, create=False)
        return cls(
            config=config,
            engine=engine,
            storage=StorageArea(config.storage.path),
            outbox=open_outbox(config, engine),
            pseudonyms=Pseudonymizer(load_or_create_key(config.pseudonym_key_file)),
            mapping=PseudonymTable(engine),
            bundles=load_bundles(config.inference, device=model_device(config.inference)),
        )

    def deidentifier(self, route: RouteConfig) -> Deidentifier:
        if route.name not in self._deidentifiers:
            self._deidentifiers[route.name] = Deidentifier(self.pseudonyms, route.deidentification)
        return self._deidentifiers[route.name]


@dataclass(frozen=True)
class StoredSeries:
    series_instance_uid: str
    paths: list[Path]
