"""The configuration of a running node, reloaded without a restart (SIGHUP, the console's button).

Only what the node can take over between two associations or two jobs changes live: the peers,
the AE rules (which callers are accepted, which called AE title), the routes and the result
destinations. Anything else read at start (ports, storage, database, TLS files, workers...) is
reported as needing a restart and keeps its running value, so no part of the node runs half on
the old value and half on the new one. A file that fails the checks of `check-config` is refused
whole, with that command's message, and the running configuration stays.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .files import config_files, config_source
from .node import ConfigError, NodeConfig, parse_config

log = logging.getLogger(__name__)

#: the settings a reload changes in the running node (dotted keys, a key covers those below it)
LIVE_KEYS = (
    "peers",
    "dicom.require_known_calling_ae",
    "dicom.require_called_ae",
    "inference.routes",
    "results.destinations",
)

_REFUSED = "configuration reload refused, the running configuration stays"

#: checks a configuration file as `check-config` does; raises ConfigError
Check = Callable[[Path], NodeConfig]


def reload_on_sighup() -> threading.Event:
    """An event set by SIGHUP: a thread of the process reloads (a signal handler must not wait
    for the lock a console reload may hold in another thread). Call it from the main thread."""
    requested = threading.Event()

    def _handler(_signum, _frame) -> None:
        log.info("received SIGHUP: reloading the configuration")
        requested.set()

    signal.signal(signal.SIGHUP, _handler)
    return requested


def _live(key: str) -> bool:
    return any(key == live or key.startswith(f"{live}.") for live in LIVE_KEYS)


def changed_keys(old: object, new: object, where: str = "") -> list[str]:
    """The dotted keys whose values differ, down to the live keys' depth (a peer by name, a
    list such as ``inference.routes`` as one key)."""
    if isinstance(old, dict) and isinstance(new, dict) and (not _live(where) or where == "peers"):
        changed: list[str] = []
        for key in sorted({*old, *new}, key=str):
            inner = f"{where}.{key}" if where else str(key)
            if key not in old or key not in new:
                changed.append(inner)
            else:
                changed += changed_keys(old[key], new[key], inner)
        return changed
    return [] if old == new else [where]


def _with_live_settings(running: NodeConfig, loaded: NodeConfig) -> dict:
    """The running configuration's document with the live settings of `loaded` in it."""
    document = running.model_dump()
    wanted = loaded.model_dump()
    for key in LIVE_KEYS:
        *parents, leaf = key.split(".")
        target, source = document, wanted
        for part in parents:
            target, source = target[part], source[part]
        target[leaf] = source[leaf]
    return document


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did: applied (the keys changed live, those that need a restart) or
    refused (the message of `check-config`)."""

    applied: bool
    message: str
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)


class LiveConfiguration:
    """The running configuration, its files, and the parts of the node told of each change.

    A reload is serialised (a signal and the console's button at the same time apply one after
    the other); listeners run in the reloading thread and must only hand the new configuration
    over (swap a reference, queue it for a process), never wait for open work to end.
    """

    def __init__(self, path: Path | str, config: NodeConfig, check: Check) -> None:
        self.path = Path(path)
        self.config = config
        self._check = check
        self._listeners: list[Callable[[NodeConfig], None]] = []
        self._lock = threading.Lock()
        #: the last reload's outcome (None: none since the start)
        self.last: ReloadOutcome | None = None
        self.started_at = time.time()

    @property
    def files(self) -> list[Path]:
        return config_files(self.path)

    def subscribe(self, listener: Callable[[NodeConfig], None]) -> None:
        self._listeners.append(listener)

    def reload(self) -> ReloadOutcome:
        """Read and check the files again; apply the live settings if they pass."""
        with self._lock:
            outcome = self._reload()
            self.last = outcome
        if outcome.applied:
            log.info("%s", outcome.message)
        else:
            log.error("%s", outcome.message)
        return outcome

    def _reload(self) -> ReloadOutcome:
        source = config_source(self.path)
        try:
            loaded = self._check(self.path)
            differing = changed_keys(self.config.model_dump(), loaded.model_dump())
            changed = [key for key in differing if _live(key)]
            restart = [key for key in differing if not _live(key)]
            # The live settings must hold with the running values of the others (a pinned peer
            # needs the TLS port that may only come with a restart).
            running = parse_config(_with_live_settings(self.config, loaded), source)
        except ConfigError as error:
            return ReloadOutcome(False, f"{_REFUSED}: configuration error: {error}")
        except Exception as error:  # a check's own failure must not end the node
            log.exception("checking the configuration failed")
            return ReloadOutcome(False, f"{_REFUSED}: the check failed: {error!r}")
        for listener in self._listeners if changed else []:
            try:
                listener(running)
            except Exception:  # one part that fails to take it over must not stop the others
                log.exception("a part of the node could not take over the reloaded configuration")
        self.config = running
        message = f"configuration reloaded from {source}: " + (
            f"changed {', '.join(changed)}" if changed else "no live setting changed"
        )
        if restart:
            message += f"; needs a restart (running value kept): {', '.join(restart)}"
        return ReloadOutcome(True, message, changed, restart)
