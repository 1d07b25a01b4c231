"""An instance's metadata as DICOM JSON (PS3.18 F.2), with large binary values replaced by
BulkDataURIs that the bulkdata route answers.

Stored files never change (a replacing duplicate gets a new file), so each instance's encoded
metadata is kept in a bounded in-memory cache: a viewer opening a series asks for it repeatedly.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from .json_model import dump
from .media import is_native

#: binary values longer than this are referenced, not inlined
BULK_DATA_THRESHOLD = 1024
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


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


def instance_metadata_json(path: Path, row: dict, instance_url: str) -> bytes:
    """The DICOM JSON of the stored instance at `path` (index row `row`), encoded: PixelData as
    a BulkDataURI, the stored transfer syntax as AvailableTransferSyntaxUID."""
    pixel_vr = None
    if row.get("rows") is not None:
        word = (row.get("bits_allocated") or 8) > 8 and is_native(row["transfer_syntax_uid"])
        pixel_vr = "OW" if word else "OB"
    return _encoded(path, row["transfer_syntax_uid"], pixel_vr, instance_url)


@lru_cache(maxsize=20_000)
def _encoded(path: Path, syntax: str, pixel_vr: str | None, instance_url: str) -> bytes:
    dataset = dcmread(path, stop_before_pixels=True)
    paths = dict(_binary_paths(dataset))

    def bulk_data_uri(data_element) -> str:
        return f"{instance_url}/bulkdata/{paths[id(data_element)]}"

    answer = dataset.to_json_dict(BULK_DATA_THRESHOLD, bulk_data_uri)
    answer["00083002"] = {"vr": "UI", "Value": [syntax]}
    if pixel_vr is not None:
        answer["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{instance_url}/bulkdata/7FE00010"}
    return dump(dict(sorted(answer.items())))
