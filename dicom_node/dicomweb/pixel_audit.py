"""Reads of an instance's pixels or bulk data (frames, rendered images, thumbnails, bulk data)
audited as Instances Transferred, like a WADO-RS retrieve of the instance.

A viewer fetches a series frame by frame (a 300-slice CT is 300 requests, and its thumbnails),
so one audit message per request would bury the trail and add a disk sync to each frame. The
trail's question is who saw which patient's study, when and from where: the first such read of
a study by a user from a client address is recorded (on disk before the answer), and further
reads by them of that study within :data:`WINDOW_SECONDS` are covered by it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..audit import messages, record
from ..index.query import studies_of

#: how long one audited read of a study covers the same user's and client's further reads
WINDOW_SECONDS = 300.0
#: (user, address, study) triples remembered; the oldest are forgotten first (and then audited
#: again at their next read)
REMEMBERED = 10_000


class StudyReadsAudited:
    """When each user, from each client address, was last audited reading each study."""

    def __init__(
        self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window
        self._clock = clock
        self._last: OrderedDict[tuple[str, str | None, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, user: messages.Participant, row: dict, what: str) -> None:
        """Audit `what` (of the instance in `row`) read by `user` (the request's user and client
        address), unless their read of the same study was audited within the window."""
        key = (user.user_id, user.address, row["study_instance_uid"])
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._window:
                return
            self._last[key] = now
            self._last.move_to_end(key)
            while len(self._last) > REMEMBERED:
                self._last.popitem(last=False)
        description = (
            f"{what}; this user's further frames, rendered images and bulk data of the study "
            f"from this address within {self._window:.0f} s are not audited again"
        )
        record(messages.instances_sent(user, studies_of([row]), description=description))
