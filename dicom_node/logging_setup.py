"""The node's log format and levels, the same in every process it starts (receivers, job
workers), so that one log reads as one story; and log lines that a peer cannot forge.

Peers choose much of what the node logs (AE titles, UIDs, text pynetdicom quotes when it warns
about a value); a new line in one of them must not start what looks like a log line of its own,
so control characters in a message are escaped. Tracebacks, which the node writes, keep their
lines.
"""

from __future__ import annotations

import logging
import warnings

_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}


class EscapingFormatter(logging.Formatter):
    """A formatter that writes control characters of the message as \\xNN."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level)
    # Control characters are escaped in every line: a UID or AE title sent with a new line in it
    # must not forge a log line.
    formatter = EscapingFormatter("%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    # pynetdicom's INFO lines repeat per message what the node already logs once; highdicom's
    # list every module it copies into a result, and its warnings quote patient names.
    for chatty in ("pynetdicom", "highdicom"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
