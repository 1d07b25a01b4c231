"""Each stored instance's metadata as DICOM JSON (PS3.18 F.2), written beside its file.

A series' first WADO-RS metadata request used to read every header with pydicom and convert it
(589 ms for 300 CT slices, Orthanc 197 ms): most of that is pydicom's value conversion. The
receiving process builds the document once, like Orthanc's "DicomAsJson", when it has been
idle for a moment (see `IdleDocumentWriter`); a request then reads small files and only fills in
its own base URL. The document is derived from the file, so it is neither flushed nor renamed
into place: a request takes only one that parses (one cut short by a crash or still being
written does not), recovery drops those of the last instances after a crash, and a request
converts the file itself where there is none.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..index.rows import InstanceAttributes
from .storage import StorageArea

log = logging.getLogger(__name__)

#: binary values longer than this are referenced, not inlined
BULK_DATA_THRESHOLD = 1024
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
#: a document's BulkDataURIs are relative to the instance's URL, which follows this key
_URI_KEY = b'"BulkDataURI":"'


def is_native(transfer_syntax: str) -> bool:
    """Pixel data stored uncompressed in this syntax."""
    try:
        return not UID(transfer_syntax).is_compressed
    except ValueError:
        return False


def pixel_data_vr(rows: int | None, bits_allocated: int | None, syntax: str) -> str | None:
    """The VR PixelData is announced with (OW for native words, else OB); None: no pixels."""
    if rows is None:
        return None
    return "OW" if (bits_allocated or 8) > 8 and is_native(syntax) else "OB"


def _binary_paths(dataset: Dataset, prefix: str = "") -> Iterator[tuple[int, str]]:
    """(id of the element, its bulkdata path) for each binary element, nested ones included:
    a path is `tag` or `tag/item/tag...` (tags as 8 hex digits, items from 0)."""
    for data_element in dataset:
        path = f"{prefix}{data_element.tag:08X}"
        if data_element.VR == "SQ":
            for index, item in enumerate(data_element.value):
                yield from _binary_paths(item, f"{path}/{index}/")
        elif data_element.VR in _BINARY_VRS:
            yield id(data_element), path


def metadata_document(dataset: Dataset, syntax: str, pixel_vr: str | None) -> bytes:
    """The DICOM JSON of `dataset` (read without its pixel data), encoded: PixelData (when
    `pixel_vr` is given) and other large binary values as BulkDataURIs relative to the
    instance's URL, the stored transfer syntax as AvailableTransferSyntaxUID."""
    paths = dict(_binary_paths(dataset))
    answer = dataset.to_json_dict(
        BULK_DATA_THRESHOLD, lambda data_element: f"bulkdata/{paths[id(data_element)]}"
    )
    answer["00083002"] = {"vr": "UI", "Value": [syntax]}
    if pixel_vr is not None:
        answer["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": "bulkdata/7FE00010"}
    document = json.dumps(dict(sorted(answer.items())), ensure_ascii=False, separators=(",", ":"))
    return document.encode("utf-8")


def file_metadata_document(path: Path, syntax: str, pixel_vr: str | None) -> bytes:
    """:func:`metadata_document` of a stored file."""
    return metadata_document(dcmread(path, stop_before_pixels=True), syntax, pixel_vr)


def complete(document: bytes) -> bool:
    """Whether `document` was written whole: a JSON object cut short does not parse."""
    try:
        return isinstance(json.loads(document), dict)
    except ValueError:
        return False


def with_instance_url(document: bytes, instance_url: str) -> bytes:
    """`document` with its BulkDataURIs made absolute under `instance_url`. The key cannot occur
    inside a JSON string, where its quotes would be escaped."""
    prefix = json.dumps(instance_url + "/", ensure_ascii=False)[1:-1].encode("utf-8")
    return document.replace(_URI_KEY, _URI_KEY + prefix)


def keep_metadata(
    storage: StorageArea, relative: str, syntax: str, attributes: InstanceAttributes
) -> None:
    """Write the metadata document of the stored file `relative`, reading its header back (from
    the page cache: a queue of these holds no pixel data). A dataset pydicom cannot convert, or
    a failed write, leaves it without one: a request then converts the file itself, and answers
    why if it cannot."""
    pixel_vr = pixel_data_vr(attributes.rows, attributes.bits_allocated, syntax)
    try:
        document = file_metadata_document(storage.path(relative), syntax, pixel_vr)
    except Exception as error:  # pydicom raises many types (and RecursionError) on odd files
        log.warning("no metadata document for %s: %s", relative, type(error).__name__)
        return
    try:
        storage.write_metadata(relative, document)
    except OSError as error:
        log.warning("cannot write the metadata document of %s: %s", relative, error.strerror)


class IdleDocumentWriter:
    """Writes the metadata documents of stored files in a thread, once no file has been added
    for `quiet_seconds`. A document costs 1-2 ms of pydicom holding the GIL: built beside the
    C-STORE path, even in a thread, it cut one sender's ingest rate by about 40 %. Files waiting
    past `backlog` (a store that never pauses) and those waiting at exit get no document and
    are converted on request instead."""

    def __init__(
        self, storage: StorageArea, quiet_seconds: float = 0.2, backlog: int = 20_000
    ) -> None:
        self._storage = storage
        self._quiet_seconds = quiet_seconds
        self._pending: deque[tuple[str, str, InstanceAttributes]] = deque(maxlen=backlog)
        self._last_added = 0.0
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="metadata-documents", daemon=True).start()

    def add(self, relative: str, syntax: str, attributes: InstanceAttributes) -> None:
        """Queue the stored file `relative` for its document."""
        with self._changed:
            idle = not self._pending
            self._pending.append((relative, syntax, attributes))
            self._last_added = time.monotonic()
            if idle:  # else the thread's timed wait ends by itself, then sees this addition
                self._changed.notify()

    def _next(self) -> tuple[str, str, InstanceAttributes]:
        with self._changed:
            while True:
                quiet = time.monotonic() - self._last_added
                if self._pending and quiet >= self._quiet_seconds:
                    return self._pending.popleft()
                self._changed.wait(self._quiet_seconds - quiet if self._pending else None)

    def _run(self) -> None:
        while True:
            keep_metadata(self._storage, *self._next())
