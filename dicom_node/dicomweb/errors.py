"""The HTTP errors DICOMweb answers, each with a readable reason in the body."""

from __future__ import annotations

from fastapi import HTTPException


class DicomwebError(HTTPException):
    """An HTTP error status with a one-line reason (sent as `{"detail": reason}`)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=reason, headers=headers)


def not_found(what: str) -> DicomwebError:
    return DicomwebError(404, f"{what} is not stored here")


def not_acceptable(offered: str) -> DicomwebError:
    return DicomwebError(
        406,
        f"none of the accepted media types can be served; this resource is available as {offered}",
    )
