"""C-STORE from DCMTK and pynetdicom senders: durable, byte-identical, precise failures."""

from __future__ import annotations

import io
import json
import time

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.presentation import build_context
from sqlalchemy import func, select

from dicom_node.index.schema import instances, series, studies
from dicom_node.store.file_meta import read_file_meta

from .conftest import CT_SERIES, MALFORMED, TRANSFER_SYNTAXES, dcmsend, dcmtk


def dataset_bytes(data: bytes) -> tuple[bytes, str]:
    """The dataset part of a DICOM file (after the file meta group) and its transfer syntax."""
    meta, offset = read_file_meta(data)
    return data[offset:], str(meta.TransferSyntaxUID)


def stored_rows(node) -> dict[str, dict]:
    with node.engine().connect() as connection:
        return {
            row.sop_instance_uid: dict(row._mapping)
            for row in connection.execute(select(instances))
        }


def fileable(path) -> bool:
    """Some pydicom samples lack StudyInstanceUID (type 1): the node must refuse those."""
    dataset = dcmread(path, stop_before_pixels=True)
    return bool(dataset.get("StudyInstanceUID")) and bool(dataset.get("SeriesInstanceUID"))


# Syntaxes newer than DCMTK 3.6.7 (HTJ2K, Deflated Image Frame Compression): sent by pynetdicom.
NEWER_THAN_DCMTK = ["HTJ2KLossless_08_RGB.dcm", "HTJ2K_08_RGB.dcm", "liver_deflate.dcm"]


def unique_samples() -> list:
    """One fileable sample per SOP Instance UID (pydicom reuses UIDs across syntaxes)."""
    chosen: dict[str, object] = {}
    for path in sorted(TRANSFER_SYNTAXES.glob("*.dcm")):
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if fileable(path) and uid not in chosen:
            chosen[uid] = path
    return list(chosen.values())


def test_dcmsend_every_transfer_syntax_stored_as_received(node, copy_files):
    """DCMTK proposes each file's own syntax; pixel data must be stored without re-encoding."""
    samples = [p for p in unique_samples() if p.name not in NEWER_THAN_DCMTK]
    folder = copy_files(TRANSFER_SYNTAXES, [p.name for p in samples])
    result = dcmsend(node.port, folder)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = stored_rows(node)
    assert len(rows) == len(samples)
    for path in samples:
        sent = dcmread(path)
        row = rows[str(sent.SOPInstanceUID)]
        stored = dcmread(node.storage / row["path"])
        assert row["transfer_syntax_uid"] == sent.file_meta.TransferSyntaxUID, path.name
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.PixelData == sent.PixelData, f"{path.name}: pixel data re-encoded"
    assert len({row["transfer_syntax_uid"] for row in rows.values()}) >= 8


def test_stored_dataset_is_byte_identical_to_what_was_sent(node):
    """Sent verbatim by pynetdicom (DCMTK rewrites group lengths), stored verbatim."""
    samples = unique_samples()
    for path in samples:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        status, _ = send_raw(node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, path)
        assert status.Status == 0x0000, path.name
    rows = stored_rows(node)
    for path in samples:
        data = path.read_bytes()
        uid = str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        stored = dataset_bytes((node.storage / rows[uid]["path"]).read_bytes())
        assert stored == dataset_bytes(data), f"{path.name}: stored bytes differ from sent"


def test_storescu_full_ct_series_indexed_with_counts(node, copy_files):
    # -xs: propose JPEG Lossless SV1 (the CT's own syntax) so storescu sends it as stored.
    result = dcmtk(
        "storescu",
        "-xs",
        "-aec",
        "AI_NODE",
        "127.0.0.1",
        str(node.port),
        "+sd",
        str(copy_files(CT_SERIES)),
    )
    assert result.returncode == 0 and "E:" not in result.stderr, result.stderr[-2000:]
    with node.engine().connect() as connection:
        assert connection.execute(select(func.count()).select_from(instances)).scalar() == 248
        assert connection.execute(select(func.count()).select_from(series)).scalar() == 1
        study = connection.execute(select(studies)).one()
    assert study.patient_id == "MIDRC-RICORD-1A-419639-001012"
    assert study.study_description == "CT CHEST WITHOUT CONTRAST"


def send_raw(port: int, sop_class: str, syntax: str, path, calling="TESTSCU"):
    """Send a file's dataset bytes unchanged (pynetdicom sends even what DCMTK would refuse)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(calling)
    ae.add_requested_context(build_context(sop_class, [syntax]).abstract_syntax, [syntax])
    association = ae.associate("127.0.0.1", port, ae_title="AI_NODE")
    assert association.is_established
    try:
        status = association.send_c_store(path)
        still_up = association.is_established
    finally:
        association.release()
    return status, still_up


@pytest.mark.parametrize(
    "name",
    ["MR_truncated.dcm", "rtplan_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"],
)
def test_truncated_dataset_fails_and_node_carries_on(node, name):
    path = MALFORMED / name
    meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
    status, still_up = send_raw(
        node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, path
    )
    assert status.Status == 0xC000
    assert status.ErrorComment.startswith(("truncated", "cannot parse"))
    assert still_up
    assert stored_rows(node) == {}
    # The node still takes good data afterwards.
    good = TRANSFER_SYNTAXES / "CT_small.dcm"
    meta = dcmread(good, stop_before_pixels=True).file_meta
    status, _ = send_raw(node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, good)
    assert status.Status == 0x0000
    assert len(stored_rows(node)) == 1
    assert "refused (0xC000 malformed_dataset)" in node.log()


def test_sop_instance_uid_mismatch_and_missing_uids_fail(node, tmp_path):
    source = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    source.file_meta.MediaStorageSOPInstanceUID = "1.2.3.999"  # request UID comes from here
    mismatched = tmp_path / "mismatch.dcm"
    source.save_as(mismatched)
    status, _ = send_raw(
        node.port, source.SOPClassUID, source.file_meta.TransferSyntaxUID, mismatched
    )
    assert status.Status == 0xC002
    assert "SOPInstanceUID differs from the announced" in status.ErrorComment

    source = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    del source.SeriesInstanceUID
    missing = tmp_path / "missing.dcm"
    source.save_as(missing)
    status, _ = send_raw(node.port, source.SOPClassUID, source.file_meta.TransferSyntaxUID, missing)
    assert status.Status == 0xC001
    assert "SeriesInstanceUID" in status.ErrorComment
    assert stored_rows(node) == {}


@pytest.mark.parametrize(
    ("policy", "status", "expected_path"),
    [("keep_first", 0x0000, "first"), ("replace", 0x0000, "second"), ("reject", 0xC003, "first")],
)
def test_duplicate_policy(make_node, tmp_path, policy, status, expected_path):
    node = make_node(storage={"duplicates": policy})
    node.start()
    first = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    second = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    second.StudyDescription = "second copy"
    paths = {"first": tmp_path / "first.dcm", "second": tmp_path / "second.dcm"}
    first.save_as(paths["first"])
    second.save_as(paths["second"])
    syntax = first.file_meta.TransferSyntaxUID
    assert send_raw(node.port, first.SOPClassUID, syntax, paths["first"])[0].Status == 0
    answer = send_raw(node.port, first.SOPClassUID, syntax, paths["second"])[0]
    assert answer.Status == status
    rows = stored_rows(node)
    assert len(rows) == 1
    stored = dcmread(node.storage / next(iter(rows.values()))["path"])
    expected = dcmread(paths[expected_path])
    assert stored.get("StudyDescription") == expected.get("StudyDescription")
    # no orphan copy left behind (the empty files are the ones the node creates ahead)
    assert len([p for p in node.storage.glob("??/??/*.dcm") if p.stat().st_size]) == 1
    # The kept file's metadata document lies beside it (written just after the answer), the
    # other copy's is gone with it.
    deadline = time.monotonic() + 15
    while (
        not (documents := list(node.storage.glob("??/??/*.json"))) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    (document,) = documents
    assert document.with_suffix(".dcm") == node.storage / next(iter(rows.values()))["path"]
    described = json.loads(document.read_bytes()).get("00081030", {}).get("Value")
    assert described == ([expected.StudyDescription] if expected.get("StudyDescription") else None)
    assert "duplicate" in node.log() or policy == "replace"


def test_disk_write_failure_answers_failure_and_indexes_nothing(node):
    path = TRANSFER_SYNTAXES / "CT_small.dcm"
    meta = dcmread(path, stop_before_pixels=True).file_meta
    with node.storage_unwritable():
        status, still_up = send_raw(
            node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, path
        )
        assert status.Status == 0xA700
        assert "cannot write to storage" in status.ErrorComment
        assert still_up
        assert stored_rows(node) == {}
    status, _ = send_raw(node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, path)
    assert status.Status == 0x0000
    assert len(stored_rows(node)) == 1
