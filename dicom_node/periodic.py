"""A background thread that does one round of work every few seconds until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicThread:
    """Calls ``run_once(now)`` every ``interval`` seconds, and at once when woken (`wake`: the
    work it waits for has just been handed over in this process); an error (a database outage,
    say) is logged and the next round runs as usual."""

    def __init__(self, name: str, interval: float, clock: Callable[[], float] = time.time) -> None:
        self._name = name
        #: the ``now`` each round is given
        self._clock = clock
        self._interval = interval
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run the next round now rather than at the end of the interval."""
        self._woken.set()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._woken.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            self._woken.wait(self._interval)
            self._woken.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once(self._clock())
            except Exception as error:
                log.error("%s round failed: %s", self._name, error)

    def run_once(self, now: float) -> object:
        raise NotImplementedError
