"""Slow and silent HTTP clients cannot hold the node's connections: a connection that sends
nothing, a request head sent a byte at a time, a body that stops half-way are each closed (and
logged with the client's address) while valid clients are served throughout."""

from __future__ import annotations

import socket
import time

import pytest
import requests


@pytest.fixture
def node(make_node):
    running = make_node(http={"request_head_timeout_seconds": 1, "request_idle_timeout_seconds": 1})
    running.start()
    return running


def closed_by_server(sock: socket.socket, trickle: bytes = b"", within: float = 20.0) -> bool:
    """Whether the server closes `sock` within `within` seconds while we send `trickle` one byte
    at a time (or nothing)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    sent = 0
    while time.monotonic() < deadline:
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                return True
            sent += 1
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


def healthy(node) -> bool:
    answer = requests.get(f"http://127.0.0.1:{node.http_port}/healthz", timeout=10)
    return answer.status_code == 200


def test_silent_slow_and_stalled_clients_are_dropped(node):
    address = ("127.0.0.1", node.http_port)
    silent = [socket.create_connection(address) for _ in range(20)]
    slow_head = socket.create_connection(address)
    stalled_body = socket.create_connection(address)
    stalled_body.sendall(
        b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 100000\r\n\r\n--b\r\n"
    )
    assert healthy(node)  # served while the others hang
    assert all(closed_by_server(sock) for sock in silent)
    assert closed_by_server(slow_head, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200)
    assert closed_by_server(stalled_body)
    for sock in [*silent, slow_head, stalled_body]:
        sock.close()
    assert healthy(node)
    assert "closed: no complete request head in 1 s" in node.log()
    assert "closed: nothing received for 1 s" in node.log()


def test_an_endless_request_head_is_refused_with_431(node):
    """httptools keeps every header field it parses: a head sent without end would fill the
    node's memory within the head deadline. Past 16 KiB it is answered 431 and closed (the
    client stops sending at 17 kB, as the node would otherwise reset the line); a large
    POST body arriving with its head in one read is not mistaken for a head."""
    fields = b"".join(b"X-Field-%03d: " % number + b"a" * 87 + b"\r\n" for number in range(170))
    with socket.create_connection(("127.0.0.1", node.http_port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields)  # 17 kB, no end
        answer = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert "request head over 16384 bytes" in node.log()
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * 200_000 + b"\r\n--b--\r\n"
    with socket.create_connection(("127.0.0.1", node.http_port)) as sock:
        sock.sendall(
            b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
            b"Connection: close\r\n\r\n" % len(body) + body
        )
        sock.settimeout(10)
        answer = read_to_end(sock)
    assert not answer.startswith(b"HTTP/1.1 431 ")
    assert answer.startswith(b"HTTP/1.1 409 ")  # STOW-RS's: the one part is not DICOM
    assert healthy(node)
