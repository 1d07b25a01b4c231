"""An instance's metadata as DICOM JSON (PS3.18 F.2), with large binary values replaced by
BulkDataURIs that the bulkdata route answers.

The document is read from beside the stored file, where ingest wrote it. Files stored without
one (before the node wrote them, just before a crash, or an instant ago) are converted here, and
the result kept in a bounded in-memory cache: stored files never change (a replacing duplicate
gets a new file), and a viewer opening a series asks for it repeatedly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..store.metadata import complete, file_metadata_document, pixel_data_vr, with_instance_url
from ..store.storage import StorageArea


def instance_metadata_json(storage: StorageArea, row: dict, instance_url: str) -> bytes:
    """The DICOM JSON of the stored instance of index row `row`, encoded, its BulkDataURIs
    under `instance_url`."""
    document = storage.read_metadata(row["path"])
    if document is None or not complete(document):
        syntax = row["transfer_syntax_uid"]
        pixel_vr = pixel_data_vr(row.get("rows"), row.get("bits_allocated"), syntax)
        document = _converted(storage.path(row["path"]), syntax, pixel_vr)
    return with_instance_url(document, instance_url)


@lru_cache(maxsize=20_000)
def _converted(path: Path, syntax: str, pixel_vr: str | None) -> bytes:
    return file_metadata_document(path, syntax, pixel_vr)
