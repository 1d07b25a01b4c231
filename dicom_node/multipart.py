"""multipart/related bodies (RFC 2387) as DICOMweb writes them (PS3.18 8.7): WADO-RS answers,
produced part by part so a series is never held in memory, and the STOW-RS requests the outbox
sends. Shared by the server and the client side, so both frame parts the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One part of a multipart response: its content type and a source of its bytes."""

    content_type: str
    chunks: Iterable[bytes]
    location: str | None = None


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def multipart_body(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related response, produced part by part."""
    for part in parts:
        header = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            header += f"Content-Location: {part.location}\r\n"
        yield (header + "\r\n").encode("ascii")
        yield from part.chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")
