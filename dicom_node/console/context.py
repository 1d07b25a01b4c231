"""What the console's pages share: the node's configuration as loaded (replaced by a reload),
the index, the storage area, the outbox and the ingest path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Path
from sqlalchemy import Engine

from ..config import NodeConfig
from ..config.live import LiveConfiguration
from ..index.ids import MAX_ROW_ID
from ..outbox.queue import Outbox
from ..store.ingest import Ingest
from ..store.storage import StorageArea

#: A job's or delivery's number in a path: a row id the index can hold (a larger number would
#: be the driver's overflow, a 500).
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


@dataclass
class ConsoleContext:
    #: the running configuration: a reload replaces it (`reconfigure`)
    config: NodeConfig
    engine: Engine
    storage: StorageArea
    box: Outbox
    #: None where this process does not store (then uploads answer 503)
    ingest: Ingest | None
    #: the running configuration's files and reloads (None: not reloadable, e.g. in a test)
    live: LiveConfiguration | None = None

    def reconfigure(self, config: NodeConfig) -> None:
        self.config = config
