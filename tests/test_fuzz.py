"""Coverage-guided fuzzing (hypothesis) of what hostile input reaches first: the received-dataset
parser, the query matching shared by C-FIND/C-MOVE/C-GET/QIDO-RS (run against a real index on
SQLite and PostgreSQL), the DICOMweb parameter and header parsers, and the DIMSE listener itself
(mutated association requests and P-DATA on a live node). Each may only refuse with its own
precise error, never crash, and the node must serve a valid client afterwards.

Bounded for CI; `FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py` runs longer
(`benchmarks/fuzz.sh`)."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from dicom_node.dicomweb import params
from dicom_node.dicomweb.errors import DicomwebError
from dicom_node.dicomweb.media import accepted
from dicom_node.index.database import open_engine
from dicom_node.index.query import KEYS, Level, QueryError, build_query, matching_rows
from dicom_node.store.received import (
    DatasetTooLarge,
    MalformedDataset,
    instance_attributes,
    parse_dataset,
)

from .conftest import TRANSFER_SYNTAXES, configured_node, dcmtk, new_database

# Garbage decodes to garbage character sets; pydicom warns and falls back, as it should.
pytestmark = pytest.mark.filterwarnings("ignore:Unknown encoding")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]


def _dataset_bytes() -> bytes:
    """A real dataset (no file meta) as a C-STORE carries it, Explicit VR Little Endian."""
    path = TRANSFER_SYNTAXES / "CT_small.dcm"
    with open(path, "rb") as stream:
        raw = stream.read()
    meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    return raw[meta_end:]


SEED = _dataset_bytes()


@st.composite
def mutated_datasets(draw) -> bytes:
    """A real dataset cut, spliced and overwritten at places hypothesis chooses."""
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "insert", "overwrite"]))
        noise = draw(st.binary(min_size=1, max_size=16))
        if action == "cut":
            data = data[:at]
        elif action == "insert":
            data[at:at] = noise
        else:
            data[at : at + len(noise)] = noise
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=512), mutated_datasets()), st.sampled_from(SYNTAXES))
def test_received_dataset_parser_refuses_only_with_its_own_errors(raw, syntax):
    try:
        parsed = parse_dataset(raw, syntax, max_inflated=1 << 20)
    except (MalformedDataset, DatasetTooLarge):
        return
    instance_attributes(parsed)  # whatever parses is indexable


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def index(request, tmp_path_factory):
    with new_database(request.param, tmp_path_factory.mktemp("fuzz")) as url:
        engine = open_engine(url)
        yield engine
        engine.dispose()


QUERY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80
) | st.sampled_from(["*", "?", "\\", "-", "20200101-", "-2020", "1.2.*", "abc12?", "%", "_", "[a]"])


@FUZZ
@given(
    st.sampled_from(list(Level)),
    st.dictionaries(st.sampled_from(sorted(KEYS)), QUERY_TEXT, max_size=4),
)
def test_query_matching_refuses_only_with_query_errors(index, level, identifier):
    try:
        query = build_query(level, identifier)
    except QueryError:
        return
    list(matching_rows(index, query, limit=5))


@FUZZ
@given(st.text(max_size=40))
@example("0\x1f")  # str.strip() takes the separator, int() does not: once an uncaught 500
def test_dicomweb_numbers_refuse_with_400(text):
    for parse in (
        lambda: params.integer(text, "limit", 0, 10_000),
        lambda: params.decimals(text, "window", 2),
    ):
        try:
            parse()
        except DicomwebError as error:
            assert error.status_code == 400


@FUZZ
@given(st.text(max_size=120))
def test_accept_headers_never_crash(header):
    accepted(header, "application/dicom")


@pytest.fixture(scope="module")
def live_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-node")
    node = configured_node(
        root / "node",
        f"sqlite:///{root / 'index.sqlite'}",
        dicom={"acse_timeout": 1, "network_timeout": 1, "max_associations": 4},
    )
    node.start()
    yield node
    node.stop()


def _associate_rq() -> bytes:
    """A valid A-ASSOCIATE-RQ for Verification, as pynetdicom encodes it."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "FUZZER"
    primitive.called_ae_title = "AI_NODE"
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    item = MaximumLengthNotification()
    item.maximum_length_received = 16384
    primitive.user_information = [item]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


ASSOCIATE_RQ = _associate_rq()


@st.composite
def hostile_streams(draw) -> bytes:
    """A mutated association request, sometimes followed by a mutated P-DATA-TF."""
    request = bytearray(ASSOCIATE_RQ)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(request) - 1))
        request[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        request = request[: draw(st.integers(0, len(request)))]
    tail = b""
    if draw(st.booleans()):
        body = draw(st.binary(max_size=64))
        length = draw(st.sampled_from([len(body), 0, 1, 0xFFFFFFFF, len(body) + 10]))
        tail = struct.pack(">BBI", 0x04, 0, length) + body
    return bytes(request) + tail


@settings(FUZZ, max_examples=max(EXAMPLES // 6, 20))
@given(hostile_streams())
def test_dimse_listener_survives_mutated_pdus(live_node, stream):
    with socket.create_connection(("127.0.0.1", live_node.port), timeout=5) as sock:
        sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass


def test_dimse_listener_serves_after_the_fuzzing(live_node):
    echoed = dcmtk("echoscu", "-aec", "AI_NODE", "127.0.0.1", str(live_node.port))
    assert echoed.returncode == 0, echoed.stderr
    assert live_node.process.poll() is None
