"""Association access control against DCMTK's echoscu: known AEs, called AE, the global limit."""

from __future__ import annotations

import socket
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from .conftest import dcmtk


def echoscu(port: int, calling: str = "ECHOSCU", called: str = "AI_NODE"):
    return dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), timeout=30)


def wait_for_log(node, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the node's log:\n{node.log()[-3000:]}")


def test_unknown_calling_ae_is_rejected_with_reason_and_logged(make_node):
    node = make_node(
        dicom={"require_known_calling_ae": True},
        peers={"ct": {"ae_title": "CT_SCANNER", "host": "127.0.0.1", "port": 104}},
    )
    node.start()
    assert echoscu(node.port, calling="CT_SCANNER").returncode == 0
    refused = echoscu(node.port, calling="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout
    log = wait_for_log(node, "association rejected")
    assert "calling AE 'INTRUDER' from 127.0.0.1:" in log
    assert "calling AE title not recognised" in log


def test_wrong_called_ae_is_rejected(node):
    refused = echoscu(node.port, called="SOMEONE_ELSE")
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stderr + refused.stdout
    log = wait_for_log(node, "called AE title not recognised")
    assert "called AE 'SOMEONE_ELSE'" in log
    assert echoscu(node.port).returncode == 0


def test_association_limit_is_global_across_receiving_processes(make_node):
    node = make_node(dicom={"max_associations": 2, "workers": 2})
    node.start()
    holders = []
    try:
        for _ in range(2):
            ae = AE("HOLDER")
            ae.add_requested_context(Verification)
            association = ae.associate("127.0.0.1", node.port, ae_title="AI_NODE")
            assert association.is_established
            holders.append(association)
        # The kernel spreads connections over both processes: the third is refused
        # wherever it lands, because the limit is the node's, not each process's.
        for _ in range(4):
            refused = echoscu(node.port)
            assert refused.returncode != 0
            assert "Local Limit Exceeded" in refused.stderr + refused.stdout
        wait_for_log(node, "local limit of concurrent associations exceeded")
    finally:
        for association in holders:
            association.release()
    deadline = time.monotonic() + 10
    while echoscu(node.port).returncode != 0:
        assert time.monotonic() < deadline, "limit not released after the associations closed"
        time.sleep(0.2)


def test_a_node_on_an_ipv6_address_answers_there(make_node):
    """`dicom.host` may be an IPv6 address (DCMTK 3.6.7 cannot connect to one: pynetdicom does)."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as error:
        pytest.skip(f"this machine has no IPv6 loopback: {error}")
    node = make_node(dicom={"host": "::1"})
    node.start()
    ae = AE()
    ae.add_requested_context(Verification)
    association = ae.associate("::1", node.port, ae_title="AI_NODE")
    assert association.is_established
    assert association.send_c_echo().Status == 0
    association.release()
    assert "calling AE 'PYNETDICOM' from ::1:" in wait_for_log(node, "association accepted")
