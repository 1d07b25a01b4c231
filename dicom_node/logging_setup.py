"""The node's log format and levels, the same in every process it starts (receivers, job
workers), so that one log reads as one story."""

from __future__ import annotations

import logging
import warnings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s",
    )
    # pynetdicom's INFO lines repeat per message what the node already logs once; highdicom's
    # list every module it copies into a result, and its warnings quote patient names.
    for chatty in ("pynetdicom", "highdicom"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
