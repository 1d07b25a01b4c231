"""multipart/related bodies (RFC 2387) as DICOMweb writes them (PS3.18 8.7): WADO-RS answers
(their framing around the stored files, which `dicomweb.body` sends; frames and bulk data
whole) and the STOW-RS requests the outbox sends. Shared by the server and the client side, so
both frame parts the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """One part of a multipart response: its content type and a source of its bytes."""

    content_type: str
    chunks: Iterable[bytes]


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def multipart_body(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related response, produced part by part."""
    for part in parts:
        yield _head(part.content_type, boundary)
        yield from part.chunks
        yield b"\r\n"
    yield _end(boundary)


def multipart_segments(parts: Sequence[tuple[str, T]], boundary: str) -> list[bytes | T]:
    """A multipart/related body as its framing (bytes) around each part's content (a `T`, left
    as given), for a body whose contents are read by a sender of their own (a WADO-RS answer's
    stored files, `dicomweb.body`)."""
    segments: list[bytes | T] = []
    for content_type, content in parts:
        segments += [_head(content_type, boundary), content, b"\r\n"]
    segments.append(_end(boundary))
    return segments


def _head(content_type: str, boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def _end(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")
