"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) driven by dicomweb-client and plain HTTP, on a node
loaded over DIMSE by DCMTK with pydicom's transfer-syntax files and the shared CT series."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from dicom_node.index.schema import jobs
from dicom_node.store.file_meta import read_file_meta

from .conftest import (
    CR_CHEST,
    CT_SERIES,
    TRANSFER_SYNTAXES,
    configured_node,
    dcmsend,
    dcmtk,
    new_database,
)

#: pydicom test files with distinct SOP Instance UIDs, one per kind of encoding
FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "JPEG-LL.dcm",  # JPEG lossless
    "MR2_J2KI.dcm",  # JPEG 2000
    "emri_small_RLE.dcm",  # RLE, 10 frames
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR colour
    "eCT_Supplemental.dcm",  # 2 frames, native
]
CT_STUDY = "1.2.826.0.1.3680043.10.474.419639.152757649181548418723364589755"
CT_SERIES_UID = "1.2.826.0.1.3680043.10.474.419639.300423266679936330916265249312"
CT_SLICES = [f"1-{n:03d}.dcm" for n in range(1, 21)]


def load_files(folder: Path) -> Path:
    """The test files and 20 CT slices, copied into one folder for dcmsend."""
    folder.mkdir()
    for name in FILES:
        shutil.copy(TRANSFER_SYNTAXES / name, folder / name)
    shutil.copy(CR_CHEST, folder / CR_CHEST.name)
    for name in CT_SLICES:
        shutil.copy(CT_SERIES / name, folder / f"ct-{name}")
    return folder


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web_node(request, tmp_path_factory):
    """One node per index backend, loaded once for the module's read-only tests."""
    root = tmp_path_factory.mktemp(f"web-{request.param}")
    with new_database(request.param, root) as url:
        node = configured_node(root / "node", url)
        node.start()
        try:
            result = dcmsend(node.port, load_files(root / "files"))
            assert result.returncode == 0, result.stderr
            node.client = DICOMwebClient(f"http://127.0.0.1:{node.http_port}/dicomweb")
            node.url = f"http://127.0.0.1:{node.http_port}/dicomweb"
            yield node
        finally:
            node.stop()


def values(answer: dict, tag: str) -> list:
    return answer.get(tag, {}).get("Value", [])


def first(answer: dict, tag: str):
    found = values(answer, tag)
    return found[0] if found else None


def after_meta(path_or_bytes) -> bytes:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return data[read_file_meta(data)[1] :]


def stored_file(node, sop_instance_uid: str) -> Path:
    from dicom_node.index.schema import instances

    with node.engine().connect() as connection:
        path = connection.execute(
            select(instances.c.path).where(instances.c.sop_instance_uid == sop_instance_uid)
        ).scalar_one()
    return node.storage / path


# QIDO-RS


def test_search_levels_and_counts(web_node):
    client = web_node.client
    (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": CT_STUDY})
    assert first(study, "00201208") == 20  # NumberOfStudyRelatedInstances
    assert first(study, "00201206") == 1  # NumberOfStudyRelatedSeries
    assert values(study, "00080061") == ["CT"]  # ModalitiesInStudy
    assert first(study, "00081190").endswith(f"/dicomweb/studies/{CT_STUDY}")
    (series,) = client.search_for_series(CT_STUDY)
    assert first(series, "0020000E") == CT_SERIES_UID
    assert first(series, "00201209") == 20  # NumberOfSeriesRelatedInstances
    assert first(series, "00080060") == "CT"
    found = client.search_for_instances(CT_STUDY, CT_SERIES_UID)
    assert len(found) == 20
    assert {first(item, "00280010") for item in found} == {512}  # Rows
    assert {first(item, "00280100") for item in found} == {16}  # BitsAllocated
    # Searches outside a study carry the levels above (PS3.18 Table 10.6.3-3).
    everywhere = client.search_for_series(search_filters={"SeriesInstanceUID": CT_SERIES_UID})
    assert first(everywhere[0], "00100020") == first(study, "00100020")
    assert first(everywhere[0], "00201208") == 20
    multi = client.search_for_instances(
        search_filters={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4.1"}
    )
    assert any(first(item, "00280008") == 10 for item in multi)  # emri: NumberOfFrames


def test_search_matching(web_node):
    client = web_node.client

    def studies(**filters) -> set[str]:
        return {first(s, "0020000D") for s in client.search_for_studies(search_filters=filters)}

    every = studies()
    assert len(every) >= 5
    assert studies(PatientName="compressedsamples^m*") == studies(
        PatientName="CompressedSamples^M*"
    )
    assert studies(PatientName="CompressedSamples^M*")
    assert studies(StudyDate="20040101-20041231") <= every
    assert studies(ModalitiesInStudy="CT") >= {CT_STUDY}
    assert CT_STUDY not in studies(ModalitiesInStudy="MR")
    some = sorted(every)[:2]
    assert studies(StudyInstanceUID=",".join(some)) == set(some)
    assert studies(PatientID="no-such-patient") == set()
    assert client.search_for_series(search_filters={"Modality": "CT"})
    by_tag = requests.get(f"{web_node.url}/studies", params={"00100010": "*^MR*"}, timeout=30)
    assert {first(s, "0020000D") for s in by_tag.json()} == studies(PatientName="*^MR*")
    # No match is an empty array with 200 (PS3.18 after CP-2473).
    empty = requests.get(f"{web_node.url}/studies", params={"PatientID": "nobody"}, timeout=30)
    assert (empty.status_code, empty.json()) == (200, [])


def test_search_includefield_and_paging(web_node):
    client = web_node.client
    (detailed,) = client.search_for_instances(
        CT_STUDY,
        CT_SERIES_UID,
        search_filters={"InstanceNumber": "1"},
        fields=["SliceThickness", "00200032"],
    )
    assert first(detailed, "00180050") is not None  # read from the stored file
    assert len(values(detailed, "00200032")) == 3
    (everything,) = client.search_for_studies(
        search_filters={"StudyInstanceUID": CT_STUDY}, get_remaining=False, fields=["all"]
    )
    assert "00100021" in everything or "00080020" in everything
    pages = [
        client.search_for_instances(CT_STUDY, CT_SERIES_UID, limit=7, offset=offset)
        for offset in (0, 7, 14)
    ]
    assert [len(page) for page in pages] == [7, 7, 6]
    uids = [first(item, "00080018") for page in pages for item in page]
    assert len(set(uids)) == 20


def test_search_inlines_a_binary_attribute_read_from_the_file(web_node):
    sent = dcmread(TRANSFER_SYNTAXES / "eCT_Supplemental.dcm", stop_before_pixels=True)
    series = f"{web_node.url}/studies/{sent.StudyInstanceUID}/series/{sent.SeriesInstanceUID}"
    answer = requests.get(
        f"{series}/instances",
        params={"SOPInstanceUID": sent.SOPInstanceUID, "includefield": "00281201"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    (found,) = answer.json()
    inlined = base64.b64decode(found["00281201"]["InlineBinary"])
    assert inlined == sent.RedPaletteColorLookupTableData


def test_bad_queries_are_400(web_node):
    for params in (
        {"NoSuchAttribute": "x"},
        {"limit": "many"},
        {"offset": "-1"},
        {"StudyDate": "yesterday"},
        {"Modality": "CT"},  # a series attribute in a study search
        {"00400275.00321060": "x"},  # sequence matching
    ):
        answer = requests.get(f"{web_node.url}/studies", params=params, timeout=30)
        assert answer.status_code == 400, params
        assert answer.json()["detail"]


# WADO-RS


def test_retrieve_gives_the_stored_bytes(web_node):
    client = web_node.client
    for name in FILES:
        sent = dcmread(TRANSFER_SYNTAXES / name, stop_before_pixels=True)
        got = client.retrieve_instance(
            sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID
        )
        stored = stored_file(web_node, sent.SOPInstanceUID)
        assert got.file_meta.TransferSyntaxUID == dcmread(stored).file_meta.TransferSyntaxUID
        raw = requests.get(
            f"{web_node.url}/studies/{sent.StudyInstanceUID}/series/{sent.SeriesInstanceUID}"
            f"/instances/{sent.SOPInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=30,
        )
        body = raw.content
        boundary = raw.headers["content-type"].split("boundary=")[1].encode()
        part = body.split(b"--" + boundary)[1].split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
        assert after_meta(part) == after_meta(stored), name
    series = client.retrieve_series(CT_STUDY, CT_SERIES_UID)
    assert sorted(d.SOPInstanceUID for d in series) == sorted(
        dcmread(CT_SERIES / n, stop_before_pixels=True).SOPInstanceUID for n in CT_SLICES
    )
    assert len(client.retrieve_study(CT_STUDY)) == 20


def test_retrieve_transcodes_to_explicit_little_endian_on_request(web_node):
    sent = dcmread(CT_SERIES / CT_SLICES[0])
    got = web_node.client.retrieve_instance(
        CT_STUDY,
        CT_SERIES_UID,
        sent.SOPInstanceUID,
        media_types=(("application/dicom", ExplicitVRLittleEndian),),
    )
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(got.pixel_array, sent.pixel_array)
    refused = requests.get(
        f"{web_node.url}/studies/{CT_STUDY}/series/{CT_SERIES_UID}/instances/{sent.SOPInstanceUID}",
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
        timeout=30,
    )
    assert refused.status_code == 406
    assert "1.2.840.10008.1.2.4.70" in refused.json()["detail"]


def test_metadata_with_bulk_data(web_node):
    client = web_node.client
    metadata = client.retrieve_series_metadata(CT_STUDY, CT_SERIES_UID)
    assert len(metadata) == 20
    item = metadata[0]
    assert first(item, "0020000E") == CT_SERIES_UID
    assert first(item, "00083002") == "1.2.840.10008.1.2.4.70"  # AvailableTransferSyntaxUID
    uri = item["7FE00010"]["BulkDataURI"]
    (pixels,) = client.retrieve_bulkdata(uri)
    stored = dcmread(
        next(
            CT_SERIES / n
            for n in CT_SLICES
            if dcmread(CT_SERIES / n, stop_before_pixels=True).SOPInstanceUID
            == first(item, "00080018")
        )
    )
    assert pixels == stored.PixelData
    assert len(client.retrieve_study_metadata(CT_STUDY)) == 20
    one = client.retrieve_instance_metadata(CT_STUDY, CT_SERIES_UID, first(item, "00080018"))
    assert one == item


def test_metadata_documents_written_at_ingest_match_a_conversion_of_the_file(web_node):
    """Ingest writes each instance's DICOM JSON beside its file; a file without one (stored
    before, or just before a crash) or with one cut short is converted on request into the
    same answer."""
    from .test_durability import wait_until

    url = f"{web_node.url}/studies/{CT_STUDY}/series/{CT_SERIES_UID}/metadata"
    uids = [first(item, "00080018") for item in requests.get(url, timeout=30).json()]
    documents = [stored_file(web_node, uid).with_suffix(".json") for uid in uids]
    wait_until(lambda: all(document.exists() for document in documents))
    from_documents = requests.get(url, timeout=30)
    assert from_documents.status_code == 200
    documents[0].write_bytes(documents[0].read_bytes()[:-1])
    for document in documents[1:]:
        document.unlink()
    converted = requests.get(url, timeout=30)
    assert converted.content == from_documents.content


def test_frames(web_node):
    client = web_node.client
    native = dcmread(TRANSFER_SYNTAXES / "eCT_Supplemental.dcm")
    uids = (native.StudyInstanceUID, native.SeriesInstanceUID, native.SOPInstanceUID)
    frames = client.retrieve_instance_frames(
        *uids, frame_numbers=[2, 1], media_types=("application/octet-stream",)
    )
    size = len(native.PixelData) // 2
    assert frames == [native.PixelData[size:], native.PixelData[:size]]
    compressed = dcmread(TRANSFER_SYNTAXES / "emri_small_RLE.dcm")
    uids = (compressed.StudyInstanceUID, compressed.SeriesInstanceUID, compressed.SOPInstanceUID)
    (as_stored,) = client.retrieve_instance_frames(
        *uids, frame_numbers=[3], media_types=(("image/dicom-rle", "1.2.840.10008.1.2.5"),)
    )
    assert as_stored == get_frame(compressed.PixelData, 2, number_of_frames=10)
    (decoded,) = client.retrieve_instance_frames(
        *uids, frame_numbers=[3], media_types=("application/octet-stream",)
    )
    assert decoded == compressed.pixel_array[2].astype("<u2").tobytes()
    missing = requests.get(
        f"{web_node.url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}/frames/11",
        timeout=30,
    )
    assert missing.status_code == 404


def test_rendered_and_thumbnails(web_node):
    client = web_node.client
    ct = dcmread(CT_SERIES / CT_SLICES[0], stop_before_pixels=True)
    uids = (CT_STUDY, CT_SERIES_UID, ct.SOPInstanceUID)
    jpeg = Image.open(io.BytesIO(client.retrieve_instance_rendered(*uids)))
    assert (jpeg.format, jpeg.size) == ("JPEG", (512, 512))
    png = client.retrieve_instance_rendered(*uids, media_types=("image/png",))
    lung = np.asarray(Image.open(io.BytesIO(png)))
    bone = np.asarray(
        Image.open(
            io.BytesIO(
                client.retrieve_instance_rendered(
                    *uids, media_types=("image/png",), params={"window": "400,1800,linear"}
                )
            )
        )
    )
    assert lung.shape == bone.shape == (512, 512) and not np.array_equal(lung, bone)
    thumb = requests.get(f"{web_node.url}/studies/{CT_STUDY}/thumbnail", timeout=30)
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) == 128
    # MONOCHROME1 (the CR): rendering inverts, so the (high-valued) collimated border is dark.
    cr = dcmread(CR_CHEST)
    rendered = np.asarray(
        Image.open(
            io.BytesIO(
                client.retrieve_instance_frames_rendered(
                    cr.StudyInstanceUID,
                    cr.SeriesInstanceUID,
                    cr.SOPInstanceUID,
                    [1],
                    media_types=("image/png",),
                )
            )
        )
    )
    stored = cr.pixel_array
    bright = stored > np.percentile(stored, 95)
    assert rendered[bright].mean() < rendered[~bright].mean()
    unsupported = requests.get(
        f"{web_node.url}/studies/{CT_STUDY}/series/{CT_SERIES_UID}/instances/"
        f"{ct.SOPInstanceUID}/rendered",
        headers={"Accept": "image/gif"},
        timeout=30,
    )
    assert unsupported.status_code == 406


def test_unknown_uids_and_media_types(web_node):
    url = web_node.url
    for path in (
        "/studies/1.2.3",
        f"/studies/{CT_STUDY}/series/1.2.3",
        f"/studies/{CT_STUDY}/series/{CT_SERIES_UID}/instances/1.2.3/metadata",
        "/studies/1.2.3/metadata",
    ):
        answer = requests.get(url + path, timeout=30)
        assert answer.status_code == 404, path
        assert "not stored" in answer.json()["detail"]
    for path, accept in (
        (f"/studies/{CT_STUDY}", "text/html"),
        (f"/studies/{CT_STUDY}/metadata", "application/dicom+xml"),
    ):
        answer = requests.get(url + path, headers={"Accept": accept}, timeout=30)
        assert answer.status_code == 406, path


def test_openapi_is_served(web_node):
    described = requests.get(f"http://127.0.0.1:{web_node.http_port}/openapi.json", timeout=30)
    paths = described.json()["paths"]
    for path in (
        "/dicomweb/studies",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        "/dicomweb/studies/{study}/series/{series}/metadata",
    ):
        assert path in paths
    assert "post" in paths["/dicomweb/studies"]


# STOW-RS


def renamed_copy(path: Path, study: str | None = None) -> bytes:
    """The file with new UIDs (a new instance of a new or given study)."""
    dataset = dcmread(path)
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: list[tuple[str, bytes]], boundary: str = "stow-boundary") -> bytes:
    body = b""
    for content_type, data in parts:
        body += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=stow-boundary'


def test_stow_stores_durably_and_indexes(make_node, tmp_path):
    node = make_node(study={"stable_seconds": 1})
    node.start()
    client = DICOMwebClient(f"http://127.0.0.1:{node.http_port}/dicomweb")
    study = generate_uid()
    files = [renamed_copy(TRANSFER_SYNTAXES / n, study) for n in ("CT_small.dcm", "JPEG-LL.dcm")]
    answer = client.store_instances([dcmread(io.BytesIO(f)) for f in files], study)
    stored = answer.ReferencedSOPSequence
    assert len(stored) == 2 and "FailedSOPSequence" not in answer
    for data in files:
        dataset = dcmread(io.BytesIO(data), stop_before_pixels=True)
        got = requests.get(
            f"http://127.0.0.1:{node.http_port}/dicomweb/studies/{study}/series/"
            f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=30,
        )
        assert after_meta(data) in got.content
    # The same index as C-STORE: C-FIND sees it, and the study becomes a job when stable.
    found = dcmtk(
        "findscu",
        "-S",
        "-aec",
        "AI_NODE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        "NumberOfStudyRelatedInstances",
        "127.0.0.1",
        str(node.port),
    )
    assert "NumberOfStudyRelatedInstances" in found.stderr and "[2 ]" in found.stderr
    from .test_durability import wait_until

    engine = node.engine()

    def job_written() -> bool:
        with engine.connect() as connection:
            statement = select(jobs.c.id).where(jobs.c.study_instance_uid == study)
            return connection.execute(statement).first() is not None

    wait_until(job_written, timeout=30)


def test_stow_bad_input(make_node):
    node = make_node()
    node.start()
    url = f"http://127.0.0.1:{node.http_port}/dicomweb/studies"
    good = renamed_copy(TRANSFER_SYNTAXES / "CT_small.dcm")
    truncated = renamed_copy(TRANSFER_SYNTAXES / "MR_small.dcm")[:-500]
    # A good part, a text part and a truncated file: 202, each failure with its reason.
    answer = requests.post(
        url,
        data=multipart(
            [
                ("application/dicom", good),
                ("text/plain", b"not an image"),
                ("application/dicom", truncated),
            ]
        ),
        headers={"Content-Type": STOW_TYPE},
        timeout=30,
    )
    assert answer.status_code == 202
    body = answer.json()
    assert len(body["00081199"]["Value"]) == 1  # ReferencedSOPSequence
    failed = body["00081198"]["Value"]  # FailedSOPSequence
    assert [first(item, "00081197") for item in failed] == [0xC000, 0xC000]
    assert "not application/dicom" in answer.headers["warning"]
    assert "truncated" in answer.headers["warning"]
    # Only failures: 409. Another study than the URL's: 0xC409.
    other = renamed_copy(TRANSFER_SYNTAXES / "CT_small.dcm")
    answer = requests.post(
        f"{url}/1.2.3.4",
        data=multipart([("application/dicom", other)]),
        headers={"Content-Type": STOW_TYPE},
        timeout=30,
    )
    assert answer.status_code == 409
    assert first(answer.json()["00081198"]["Value"][0], "00081197") == 0xC409
    # A broken body: 400; not multipart: 415.
    broken = requests.post(
        url, data=b"garbage without boundary", headers={"Content-Type": STOW_TYPE}, timeout=30
    )
    assert broken.status_code == 400 and "malformed" in broken.json()["detail"]
    wrong = requests.post(url, data=good, headers={"Content-Type": "application/dicom"}, timeout=30)
    assert wrong.status_code == 415
    # Nothing stored was lost, the refused ones are not indexed, and the node still answers.
    found = requests.get(url, timeout=30).json()
    assert len(found) == 1
    assert first(found[0], "00201208") == 1
