"""multipart/related bodies (RFC 2387) as DICOMweb writes them (PS3.18 8.7): WADO-RS answers,
produced part by part so a series is never held in memory, and the STOW-RS requests the outbox
sends. Shared by the server and the client side, so both frame parts the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One part of a multipart response: its content type and a source of its bytes."""

    content_type: str
    chunks: Iterable[bytes]
    location: str | None = None
    #: how many bytes `chunks` hold, where known beforehand (see `multipart_length`)
    size: int | None = None


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def multipart_body(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related response, produced part by part."""
    for part in parts:
        yield _head(part, boundary)
        yield from part.chunks
        yield b"\r\n"
    yield _end(boundary)


def multipart_length(parts: Sequence[Part], boundary: str) -> int | None:
    """The length of `multipart_body(parts, boundary)`, None unless every part's size is
    known: an answer with a Content-Length goes out without HTTP's chunked framing (a copy of
    every piece in the server) and lets the client see how much is coming."""
    if any(part.size is None for part in parts):
        return None
    framing = sum(len(_head(part, boundary)) + len(b"\r\n") for part in parts)
    return framing + sum(part.size or 0 for part in parts) + len(_end(boundary))


def _head(part: Part, boundary: str) -> bytes:
    header = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
    if part.location:
        header += f"Content-Location: {part.location}\r\n"
    return (header + "\r\n").encode("ascii")


def _end(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")
