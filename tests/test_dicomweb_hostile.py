"""DICOMweb under attack: truncated and oversized STOW-RS bodies, instances that cannot be
transcoded or decoded, malformed numbers and headers. Each gets a precise 4xx (or correct
bytes), never a 500 nor a success that hides a loss, and the node keeps serving valid clients.
Requests are raw HTTP (http.client) so that nothing is tidied up on the way."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import struct
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .conftest import TRANSFER_SYNTAXES, configured_node, dcmsend, new_database
from .test_dicomweb import STOW_TYPE, multipart, renamed_copy, stored_file

LIMITS = {"max_stow_bytes": 400_000, "max_stow_part_bytes": 150_000}
LIMITS |= {"max_viewport": 512, "max_frames": 4}
BIG_ENDIAN = ["MR_small_bigendian.dcm", "emri_small_big_endian.dcm"]
UNDECODABLE = "JPEG-lossy.dcm"  # 12-bit JPEG Extended no installed decoder takes
ELE_ACCEPT = (
    f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
)
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def with_windows(folder: Path) -> Path:
    """CT_small with two stored windows (a MultiValue, as CT often has)."""
    dataset = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.WindowCenter, dataset.WindowWidth = [40, 400], [400, 1500]
    path = folder / "windows.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def deeply_nested(folder: Path, depth: int = 300) -> tuple[Path, str]:
    """CT_small with a ContentSequence nested `depth` items deep, deeper than pydicom's reader
    follows (its recursion gives up near 200), encoded by hand; and its WADO-RS path."""
    dataset = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for tag in [tag for tag in dataset.keys() if 0x0040A730 < tag < 0x7FE00010]:
        del dataset[tag]  # the nested sequence goes in tag order, just before PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    undefined = b"\xff\xff\xff\xff"
    opening = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + undefined
    opening += b"\xfe\xff\x00\xe0" + undefined  # item of undefined length
    closing = b"\xfe\xff\x0d\xe0\0\0\0\0" + b"\xfe\xff\xdd\xe0\0\0\0\0"
    leaf = struct.pack("<HH", 0x0008, 0x0100) + b"SH" + struct.pack("<H", 2) + b"X "
    at = data.index(b"\xe0\x7f\x10\x00OW")
    path = folder / "nested.dcm"
    path.write_bytes(data[:at] + opening * depth + leaf + closing * depth + data[at:])
    return path, instance_path(dataset)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hostile(request, tmp_path_factory):
    """A node with small bounds, holding big endian, undecodable, multi-window and deeply
    nested instances (sent by DCMTK)."""
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with new_database(request.param, root) as url:
        node = configured_node(root / "node", url, http={"dicomweb": LIMITS})
        node.start()
        try:
            folder = root / "files"
            folder.mkdir()
            for name in [*BIG_ENDIAN, UNDECODABLE]:
                shutil.copy(TRANSFER_SYNTAXES / name, folder / name)
            node.urls = {path.name: instance_path(dcmread(path)) for path in folder.iterdir()}
            node.urls["windows"] = instance_path(dcmread(with_windows(folder)))
            node.urls["nested"] = deeply_nested(folder)[1]
            result = dcmsend(node.port, folder)
            assert result.returncode == 0, result.stderr
            yield node
        finally:
            node.stop()


def call(node, method: str, path: str, headers=None, body: bytes | None = None):
    """(status, headers, body) of one raw request under /dicomweb."""
    connection = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    try:
        connection.request(method, "/dicomweb" + path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def instance_path(dataset) -> str:
    return (
        f"/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}"
    )


def detail(body: bytes) -> str:
    return json.loads(body)["detail"]


def multipart_parts(headers: dict, body: bytes) -> list[bytes]:
    """The parts of a complete multipart/related body (asserting its closing boundary)."""
    boundary = headers["content-type"].split("boundary=")[1].encode()
    assert body.endswith(b"--" + boundary + b"--\r\n"), "the body is cut short"
    pieces = body.split(b"--" + boundary)[1:-1]
    return [piece.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")] for piece in pieces]


def still_serves(node) -> None:
    """A valid search and a valid retrieve still succeed."""
    status, _, body = call(node, "GET", "/studies")
    assert status == 200 and len(json.loads(body)) >= 1
    path = node.urls["windows"]
    status, headers, body = call(node, "GET", path, {"Accept": AS_STORED})
    assert status == 200 and len(multipart_parts(headers, body)) == 1


def found(node, sop_instance_uid: str) -> bool:
    status, _, body = call(node, "GET", f"/instances?SOPInstanceUID={sop_instance_uid}")
    assert status == 200
    return bool(json.loads(body))


# STOW-RS


def test_stow_body_without_closing_boundary_is_refused_naming_what_was_stored(hostile):
    first, second = (renamed_copy(TRANSFER_SYNTAXES / "MR_small.dcm") for _ in range(2))
    uids = [str(dcmread(io.BytesIO(data)).SOPInstanceUID) for data in (first, second)]
    whole = multipart([("application/dicom", first), ("application/dicom", second)])
    unclosed = whole[: -len(b"--stow-boundary--\r\n")]
    for body in (unclosed, whole[: len(whole) - 3000]):  # unclosed; cut inside the 2nd part
        status, _, answer = call(hostile, "POST", "/studies", {"Content-Type": STOW_TYPE}, body)
        assert status == 400
        assert detail(answer) == (
            "the multipart body ends before its closing boundary: its last part may be "
            f"incomplete and was not stored; 1 instance(s) before the fault were stored ({uids[0]})"
        )
        assert found(hostile, uids[0]) and not found(hostile, uids[1])
    status, _, answer = call(hostile, "POST", "/studies", {"Content-Type": STOW_TYPE}, whole)
    assert status == 200 and found(hostile, uids[1])
    still_serves(hostile)


def test_stow_bounds_are_413(hostile):
    good = renamed_copy(TRANSFER_SYNTAXES / "MR_small.dcm")
    # A declared length beyond the bound: refused before the body is read.
    connection = http.client.HTTPConnection("127.0.0.1", hostile.http_port, timeout=30)
    connection.putrequest("POST", "/dicomweb/studies")
    connection.putheader("Content-Type", STOW_TYPE)
    connection.putheader("Content-Length", str(10**12))
    connection.endheaders(b"--stow-boundary\r\n")
    answer = connection.getresponse()
    assert answer.status == 413
    assert detail(answer.read()).startswith(
        "the body is larger than http.dicomweb.max_stow_bytes (400000 bytes); 0 instance(s)"
    )
    connection.close()
    # A chunked body (no length declared) that grows beyond it: refused once it does.
    body = multipart([("application/dicom", good)] + [("text/plain", b"x" * 100_000)] * 5)
    chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
    connection = http.client.HTTPConnection("127.0.0.1", hostile.http_port, timeout=30)
    connection.request(
        "POST",
        "/dicomweb/studies",
        body=chunks,
        headers={"Content-Type": STOW_TYPE},
        encode_chunked=True,
    )
    answer = connection.getresponse()
    assert answer.status == 413
    assert "max_stow_bytes (400000 bytes); 1 instance(s) before the fault were stored" in (
        detail(answer.read())
    )
    connection.close()
    # One part beyond the part bound.
    big = multipart([("application/dicom", b"\0" * 150_001)])
    status, _, answer = call(hostile, "POST", "/studies", {"Content-Type": STOW_TYPE}, big)
    assert status == 413
    assert detail(answer) == (
        "a part is larger than http.dicomweb.max_stow_part_bytes (150000 bytes); "
        "0 instance(s) before the fault were stored"
    )
    still_serves(hostile)


# WADO-RS


@pytest.mark.parametrize("name", BIG_ENDIAN)
def test_big_endian_instances_are_transcoded_to_correct_bytes(hostile, name):
    source = dcmread(TRANSFER_SYNTAXES / name)
    status, headers, body = call(hostile, "GET", hostile.urls[name], {"Accept": ELE_ACCEPT})
    assert status == 200
    (part,) = multipart_parts(headers, body)
    got = dcmread(io.BytesIO(part))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert got.SOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(got.pixel_array, source.pixel_array)
    # A whole series the same way.
    series = hostile.urls[name].rsplit("/instances/", 1)[0]
    status, headers, body = call(hostile, "GET", series, {"Accept": ELE_ACCEPT})
    assert status == 200 and len(multipart_parts(headers, body)) == 1


def test_an_instance_that_cannot_be_transcoded_is_406_before_any_byte(hostile):
    path = hostile.urls[UNDECODABLE]
    uid = path.rsplit("/", 1)[1]
    status, _, body = call(hostile, "GET", path, {"Accept": ELE_ACCEPT})
    assert status == 406
    assert detail(body) == (
        "none of the accepted media types can be served; this resource is available as "
        f'multipart/related; type="application/dicom"; transfer-syntax=* (as stored): '
        f"instance {uid} cannot be decoded into Explicit VR Little Endian"
    )
    status, headers, body = call(hostile, "GET", path, {"Accept": AS_STORED})
    assert status == 200
    (part,) = multipart_parts(headers, body)
    assert part == stored_file(hostile, uid).read_bytes()
    # A search that asks for the nested sequence still answers, that attribute without value.
    status, _, body = call(hostile, "GET", f"/instances?SOPInstanceUID={uid}&includefield=0040A730")
    assert status == 200
    assert json.loads(body)[0]["0040A730"] == {"vr": "SQ"}
    still_serves(hostile)


def test_multi_valued_stored_windows_render_with_the_first(hostile):
    path = hostile.urls["windows"]
    for resource in ("/rendered", "/thumbnail", "/frames/1/rendered"):
        status, headers, body = call(hostile, "GET", path + resource, {"Accept": "image/png"})
        assert status == 200 and headers["content-type"] == "image/png", resource
    study = path.split("/series/")[0]
    assert call(hostile, "GET", study + "/thumbnail")[0] == 200


def test_a_deeply_nested_instance_metadata_is_406_and_the_rest_is_served(hostile):
    path = hostile.urls["nested"]
    uid = path.rsplit("/", 1)[1]
    series = path.rsplit("/instances/", 1)[0]
    for metadata in (path + "/metadata", series + "/metadata", path + "/metadata"):
        status, _, body = call(hostile, "GET", metadata)
        assert status == 406, metadata
        assert detail(body).endswith(f"instance {uid} cannot be decoded into DICOM JSON metadata")
    # What pydicom can still read is served: pixels, and the instance as stored.
    assert call(hostile, "GET", path + "/rendered")[0] == 200
    status, headers, body = call(hostile, "GET", path + "/frames/1")
    assert status == 200 and len(multipart_parts(headers, body)[0]) == 128 * 128 * 2
    status, headers, body = call(hostile, "GET", path, {"Accept": AS_STORED})
    assert status == 200
    (part,) = multipart_parts(headers, body)
    assert part == stored_file(hostile, uid).read_bytes()
    # A search that asks for the nested sequence still answers, that attribute without value.
    status, _, body = call(hostile, "GET", f"/instances?SOPInstanceUID={uid}&includefield=0040A730")
    assert status == 200
    assert json.loads(body)[0]["0040A730"] == {"vr": "SQ"}
    still_serves(hostile)


def quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="/=&,?%")


MALFORMED_QUERIES = [
    ("/studies?limit=99999999999999999999", "limit must be an integer from 0"),
    ("/studies?offset=99999999999999999999", "offset must be an integer from 0"),
    ("/studies?limit=²", "limit must be an integer from 0, not '²'"),
    ("/studies?offset=١٢", "offset must be an integer from 0, not '١٢'"),
    ("/studies?limit=-1", "limit must be an integer from 0"),
    ("/series?SeriesNumber=99999999999", "'99999999999' is not an integer string (IS)"),
    ("/instances?InstanceNumber=١", "'١' is not an integer string (IS)"),
    ("/studies?PatientID=a%00b", "the value of PatientID holds a NUL character"),
]


@pytest.mark.parametrize(("query", "reason"), MALFORMED_QUERIES)
def test_malformed_search_numbers_are_400(hostile, query, reason):
    status, _, body = call(hostile, "GET", quoted(query))
    assert status == 400 and reason in detail(body)


MALFORMED_PIXEL_REQUESTS = [
    ("/frames/1,nan", "frame numbers must be an integer from 1, not 'nan'"),
    ("/frames/²", "frame numbers must be an integer from 1, not '²'"),
    ("/frames/0", "frame numbers must be an integer from 1, not '0'"),
    ("/frames/99999999999999999999999", "frame numbers must be an integer from 1"),
    ("/frames/1,1,1,1,1", "5 frames asked: http.dicomweb.max_frames allows 4 per request"),
    ("/rendered?viewport=nan,nan", "viewport must be 2 comma-separated numbers, not 'nan,nan'"),
    ("/rendered?viewport=1e999,10", "viewport is out of range: '1e999,10'"),
    ("/rendered?viewport=100000,100000", "viewport sizes must be from 1 to 512"),
    ("/rendered?viewport=٣,٣", "viewport must be 2 comma-separated numbers"),
    ("/rendered?window=nan,400", "window must be 2 comma-separated numbers"),
    ("/rendered?window=40,1e999", "window is out of range"),
    ("/rendered?quality=²", "quality must be an integer from 1 to 100, not '²'"),
    ("/rendered?quality=101", "quality must be an integer from 1 to 100"),
]


@pytest.mark.parametrize(("resource", "reason"), MALFORMED_PIXEL_REQUESTS)
def test_malformed_frame_and_rendering_numbers_are_400(hostile, resource, reason):
    path = hostile.urls["emri_small_big_endian.dcm"]
    status, _, body = call(hostile, "GET", quoted(path + resource), {"Accept": "*/*"})
    assert status == 400 and reason in detail(body)


def test_malformed_media_types_are_4xx(hostile):
    path = hostile.urls["windows"]
    for accept in (";", " ; ; ", ",;,"):
        for resource in ("", "/metadata", "/rendered", "/frames/1"):
            status, _, _ = call(hostile, "GET", path + resource, {"Accept": accept})
            assert status == 406, (accept, resource)
    # Non-numeric weights are taken as 1, not a crash.
    status, _, _ = call(hostile, "GET", path, {"Accept": AS_STORED + "; q=nan"})
    assert status == 200
    good = renamed_copy(TRANSFER_SYNTAXES / "MR_small.dcm")
    for content_type, expected in ((";", 415), ("multipart/related; boundary", 400)):
        body = multipart([("application/dicom", good)])
        status, _, _ = call(hostile, "POST", "/studies", {"Content-Type": content_type}, body)
        assert status == expected, content_type
    # A part whose own Content-Type is malformed is refused, not the whole body.
    body = multipart([(";", good)])
    status, _, answer = call(hostile, "POST", "/studies", {"Content-Type": STOW_TYPE}, body)
    assert status == 409 and json.loads(answer)["00081198"]["Value"][0]["00081197"]["Value"] == [
        0xC000
    ]
    assert call(hostile, "GET", "/studies/1.2.3%00")[0] == 404
    still_serves(hostile)
