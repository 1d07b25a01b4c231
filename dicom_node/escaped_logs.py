"""Log lines that a peer cannot forge: control characters in a message are escaped.

Peers choose much of what the node logs (AE titles, UIDs, text pynetdicom quotes when it
warns about a value); a new line in one of them must not start what looks like a log line of
its own. Tracebacks, which the node writes, keep their lines.
"""

from __future__ import annotations

import logging

_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}


class EscapingFormatter(logging.Formatter):
    """A formatter that writes control characters of the message as \\xNN."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)
