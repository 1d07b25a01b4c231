"""What the console's pages share: the node's configuration as loaded, the index, the storage area,
the outbox and the ingest path."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from ..config import NodeConfig
from ..outbox.queue import Outbox
from ..store.ingest import Ingest
from ..store.storage import StorageArea


@dataclass(frozen=True)
class ConsoleContext:
    config: NodeConfig
    engine: Engine
    storage: StorageArea
    box: Outbox
    #: None where this process does not store (then uploads answer 503)
    ingest: Ingest | None
