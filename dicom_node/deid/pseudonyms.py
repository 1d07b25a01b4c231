"""Keyed, deterministic pseudonyms: the same original always maps to the same replacement, so
series, frames of reference and references between instances stay consistent, while nobody
without the key can link a pseudonym back to the original.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

KEY_BYTES = 32
#: Modified dates move back by 1 to this many days, the same for all of a patient's studies.
MAX_DATE_SHIFT_DAYS = 1825


def load_or_create_key(path: Path) -> bytes:
    """The node's pseudonym key, generated once (owner read/write only) and kept across restarts."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return path.read_bytes()
        with os.fdopen(descriptor, "wb") as file:
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        return key
    if len(key) < 16:
        raise ValueError(f"pseudonym key {path} is too short ({len(key)} bytes)")
    return key


class Pseudonymizer:
    """UIDs and identifiers replaced by HMAC-SHA256 pseudonyms under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        #: pseudonym -> (original, kind) given out since the last :meth:`take_issued`
        self.issued: dict[str, tuple[str, str]] = {}

    def take_issued(self) -> dict[str, tuple[str, str]]:
        """The pseudonyms given out since the last call, for the mapping store."""
        issued, self.issued = self.issued, {}
        return issued

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.`` + a UUID derived from the keyed hash (PS3.5 B.2), at most 44 characters."""
        pseudonym = f"2.25.{uuid.UUID(bytes=self._digest('uid', original)[:16], version=4).int}"
        self.issued[pseudonym] = (original, "uid")
        return pseudonym

    def patient(self, patient_id: str) -> str:
        """The patient's pseudonym (16 hex characters), used as Patient ID and Patient's Name."""
        pseudonym = self._digest("patient", patient_id).hex()[:16].upper()
        self.issued[pseudonym] = (patient_id, "patient")
        return pseudonym

    def date_offset(self, patient_id: str) -> int:
        """Days the patient's dates move back under the Modified Dates option (1..1825)."""
        return 1 + int.from_bytes(self._digest("date", patient_id)[:4]) % MAX_DATE_SHIFT_DAYS
