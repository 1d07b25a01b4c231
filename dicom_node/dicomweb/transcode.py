"""Stored instances re-encoded in Explicit VR Little Endian for WADO-RS, done before the answer
starts.

Transcoding can fail (pixel data no decoder takes). Once the 200 status line is out, a failure
can only cut the body short, which a client cannot tell from a complete answer; so every
instance to transcode is transcoded first, into a spooled temporary file (in memory up to a few
MB, then on disk), and the answer starts only when all of them succeeded.
"""

from __future__ import annotations

from pathlib import Path
from tempfile import SpooledTemporaryFile

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

#: a transcoded instance stays in memory up to this size, then goes to a temporary file
SPOOLED_IN_MEMORY = 8 << 20
#: the word size of the VRs whose values pydicom keeps as bytes in the file's byte order
_WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class TranscodeError(ValueError):
    """The stored instance cannot be re-encoded (e.g. no decoder for its pixel data)."""


def _swap_words(_dataset: Dataset, data_element: DataElement) -> None:
    size = _WORD_BYTES.get(data_element.VR)
    if size and isinstance(data_element.value, bytes) and len(data_element.value) % size == 0:
        words = np.frombuffer(data_element.value, dtype=f">u{size}")
        data_element.value = words.astype(f"<u{size}").tobytes()


def explicit_little_endian(path: Path) -> SpooledTemporaryFile:
    """The stored instance in Explicit VR Little Endian (pixel data decompressed, big endian
    words swapped), rewound; TranscodeError if it cannot be."""
    try:
        dataset = dcmread(path)
        syntax = dataset.file_meta.TransferSyntaxUID
        if syntax.is_compressed:
            # The same instance in another encoding: it keeps its SOP Instance UID.
            dataset.decompress(generate_instance_uid=False)
        else:
            if not syntax.is_little_endian:
                # pydicom decodes numbers, but leaves these values in the file's byte order.
                dataset.walk(_swap_words)
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        spool = SpooledTemporaryFile(SPOOLED_IN_MEMORY)
        dcmwrite(spool, dataset, enforce_file_format=True)
    except Exception as error:  # decoders raise anything: RuntimeError, ValueError, KeyError...
        raise TranscodeError(f"{type(error).__name__}: {error}") from error
    spool.seek(0)
    return spool
