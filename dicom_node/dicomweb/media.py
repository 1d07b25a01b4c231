"""Accept headers (PS3.18 8.7): what media types and transfer syntaxes a client will take, and
the media type of each compressed frame."""

from __future__ import annotations

from dataclasses import dataclass

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
