"""A job's progress as its worker goes: the work is counted in units (one model on one series,
one forwarding of a series to research, one series nothing applies to), each unit a timed step
in the index; a unit's own steps (de-identify, infer, store) move the percentage within it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from ..index import progress

#: what a unit reports of its own steps: the step's name and how far the unit is (0 to 1)
StepReport = Callable[[str, float], None]


class JobProgress:
    """Writes the job's step and percentage as its units begin, advance and end."""

    def __init__(self, engine: Engine, job_id: int, units: int, models: list[str]) -> None:
        self._engine = engine
        self._job_id = job_id
        self._units = max(units, 1)
        self._done = 0
        progress.started(engine, job_id, models)

    def _percent(self, within: float) -> int:
        return min(100, int(100 * (self._done + within) / self._units))

    @contextmanager
    def unit(self, name: str) -> Iterator[StepReport]:
        """A timed unit of work; what it yields reports the unit's steps. A unit that raises
        stays unfinished in the index, which is what the job's failure says too."""
        step_id = progress.begin_step(self._engine, self._job_id, name)
        progress.at_step(self._engine, self._job_id, name, self._percent(0))

        def report(step: str, within: float) -> None:
            progress.at_step(self._engine, self._job_id, f"{name}: {step}", self._percent(within))

        yield report
        progress.end_step(self._engine, step_id)
        self._done += 1
        progress.at_step(self._engine, self._job_id, name, self._percent(0))

    def skipped(self, units: int = 1) -> None:
        """Units with nothing to run (no route matches, held back)."""
        self._done += units

    def finished(self) -> None:
        progress.at_step(self._engine, self._job_id, "finished", 100)
