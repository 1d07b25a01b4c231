"""The hand-encoded file meta group must read back through pydicom as the standard defines it."""

from __future__ import annotations

import io

from pydicom import dcmread

from dicom_node.store.file_meta import IMPLEMENTATION_CLASS_UID, encode_file_meta

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DATASET = b"\x08\x00\x18\x00UI\x0a\x001.2.3.4.5\x00"  # (0008,0018) SOPInstanceUID 1.2.3.4.5


def test_file_meta_reads_back_with_pydicom():
    for source_ae, instance in (("STORESCU", "1.2.3.4.5"), ("", "1.2.3.4.56")):
        data = encode_file_meta(CT_IMAGE, instance, EXPLICIT_LE, source_ae) + DATASET
        dataset = dcmread(io.BytesIO(data))
        meta = dataset.file_meta
        assert data[128:132] == b"DICM"
        assert meta.FileMetaInformationVersion == b"\x00\x01"
        assert meta.MediaStorageSOPClassUID == CT_IMAGE
        assert meta.MediaStorageSOPInstanceUID == instance
        assert meta.TransferSyntaxUID == EXPLICIT_LE
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.get("SourceApplicationEntityTitle", "") == source_ae
        assert meta.FileMetaInformationGroupLength == len(data) - 144 - len(DATASET)
        assert dataset.SOPInstanceUID == "1.2.3.4.5"
