"""Objects this node makes (AI results), kept like received instances: the same file layout
(the node's file meta group before the dataset bytes), the same durable write, the same index
rows, so C-FIND, C-MOVE, C-GET and the outbox serve them as they serve anything received.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from sqlalchemy import Engine

from ..index.writer import NewInstance, index_own_instance
from .file_meta import encode_file_meta
from .metadata import keep_metadata
from .received import instance_attributes, parse_dataset
from .storage import StorageArea


@dataclass(frozen=True)
class EncodedInstance:
    """A dataset as the bytes of a stored file, and its index attributes."""

    chunks: list[bytes]
    item: NewInstance

    @property
    def sop_instance_uid(self) -> str:
        return self.item.attributes.sop_instance_uid


def encode_instance(dataset: Dataset, ae_title: str) -> EncodedInstance:
    """``dataset`` in its file meta's transfer syntax; the index attributes are read back from
    the encoded bytes by the ingest path's own reader."""
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    if "PixelData" in dataset:
        # PS3.5 A.4: encapsulated pixel data has an undefined length, native data its own (as
        # pydicom's dcmwrite sets it; write_dataset leaves it to the caller).
        dataset["PixelData"].is_undefined_length = syntax.is_compressed
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    write_dataset(buffer, dataset)
    raw = buffer.getvalue()
    attributes = instance_attributes(parse_dataset(raw, syntax))
    meta = encode_file_meta(attributes.sop_class_uid, attributes.sop_instance_uid, syntax, ae_title)
    item = NewInstance(
        attributes=attributes,
        transfer_syntax_uid=str(syntax),
        path="",
        size=len(meta) + len(raw),
        calling_ae_title=ae_title,
        received_at=time.time(),
    )
    return EncodedInstance([meta, raw], item)


def store_own_instance(storage: StorageArea, engine: Engine, encoded: EncodedInstance) -> bool:
    """Write the file durably, then index it; False (nothing kept) when it is indexed already."""
    relative = storage.write(encoded.chunks)
    keep_metadata(storage, relative, encoded.item.transfer_syntax_uid, encoded.item.attributes)
    storage.sync(relative)
    item = replace(encoded.item, path=relative)
    try:
        added = index_own_instance(engine, item)
    except Exception:
        storage.remove(relative)
        raise
    if not added:
        storage.remove(relative)
    return added
