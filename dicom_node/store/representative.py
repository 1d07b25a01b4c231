"""The header of one stored instance of a query result: where C-FIND and QIDO-RS find the
attributes a client asks for that the index does not hold."""

from __future__ import annotations

import logging

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import Engine

from ..index.query import Level, representative_path
from .storage import StorageArea

log = logging.getLogger(__name__)


def representative_header(
    engine: Engine, storage: StorageArea, level: Level, row: dict
) -> Dataset | None:
    """The header (no pixel data) of one stored instance under the result `row` at `level`;
    None, with the error logged, when there is none or it cannot be read."""
    path = representative_path(engine, level, row)
    if not path:
        return None
    try:
        return dcmread(storage.path(path), stop_before_pixels=True)
    except Exception as error:
        log.error("cannot read stored instance %s: %s", path, error)
        return None
