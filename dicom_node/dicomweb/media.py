"""Accept headers and the chunks of multipart responses (PS3.18 8.7): what a client will take,
and stored files read lazily so a series is never held in memory (the bodies themselves are
written by `dicom_node.multipart`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

#: the transfer syntaxes of compressed pixel data and the media type of their frames
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
CHUNK_SIZE = 1 << 20
#: the least a piece of a streamed answer holds (but the last)
PIECE_SIZE = 1 << 20


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: `type/subtype` and its parameters (keys lower-case)."""

    media_type: str
    params: dict[str, str]

    @property
    def part_type(self) -> str:
        """The type of the parts of a multipart/related range (`type=` parameter)."""
        return self.params.get("type", "")

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_media_range(text: str) -> MediaRange:
    """One media range; an empty or malformed one has an empty type, which matches nothing."""
    head, *parameters = _split(text, ";") or [""]
    params = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return MediaRange(head.strip().lower(), params)


def accepted(header: str | None, default: str) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (by `q`); `default` when absent."""
    ranges = [parse_media_range(item) for item in _split(header or default, ",")]
    return sorted(ranges, key=lambda item: -_quality(item))


def _quality(item: MediaRange) -> float:
    """The `q` weight (RFC 9110 12.4.2), 1 when absent or not a number from 0 to 1."""
    try:
        quality = float(item.params.get("q", "1"))
    except ValueError:
        return 1.0
    return quality if 0.0 <= quality <= 1.0 else 1.0


def file_chunks(path) -> Iterator[bytes]:
    """A stored file, read lazily in chunks of its own size up to CHUNK_SIZE: a 1 MiB buffer
    for a 200 kB compressed slice is memory the allocator maps and the kernel zeroes anew for
    each file. Unbuffered: the chunks are large, Python's buffer would only copy them."""
    with open(path, "rb", buffering=0) as stream:
        left = os.fstat(stream.fileno()).st_size
        while left > 0 and (chunk := stream.read(min(left, CHUNK_SIZE))):
            left -= len(chunk)
            yield chunk


def stream_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """An open file read lazily in chunks, closed at the end (or when the client left)."""
    with stream:
        while chunk := stream.read(CHUNK_SIZE):
            yield chunk


def coalesced(chunks: Iterable[bytes], size: int = PIECE_SIZE) -> Iterator[bytes]:
    """`chunks` joined into pieces of at least `size` bytes (but the last): Starlette fetches
    each piece of a streamed body in a worker thread, a hop (and a chunk of the HTTP framing)
    that costs more than copying a part header, a 100 kB compressed slice and a part trailer
    into one piece. Not more than 1 MiB: larger pieces (4 MiB) are fresh allocations each time
    (glibc maps them, the kernel faults and zeroes their pages), which cost more system time
    than the hops they save."""
    pending: list[bytes] = []
    length = 0
    for chunk in chunks:
        pending.append(chunk)
        length += len(chunk)
        if length >= size:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)


def last_held(pieces: Iterable[bytes], ready: Callable[[], None]) -> Iterator[bytes]:
    """`pieces`, the last one only once `ready()` has returned: the answer cannot complete
    before what `ready` waits for (its audit line on disk), which meanwhile overlaps the rest.
    Applied to a body's chunks before they are `coalesced` (the last chunk is the closing
    boundary): held back after coalescing, a whole piece more stays alive, and the allocator
    maps fresh memory for every piece (system time per answer up by half)."""
    previous = None
    for piece in pieces:
        if previous is not None:
            yield previous
        previous = piece
    ready()
    if previous is not None:
        yield previous
