"""The C-FIND handler (Patient Root and Study Root), answering from the index.

Keys the index holds are matched in SQL; requested keys it does not hold are read from one
stored instance of each matching entity, so a viewer asking for e.g. Rows at IMAGE level gets
the stored value rather than nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # pynetdicom makes them at import time (into globals()): mypy cannot see them
    PatientRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import Engine

from .. import metrics
from ..index.counts import computed_values
from ..index.query import (
    COMPUTED,
    KEYS,
    NOT_MATCHED,
    Level,
    QueryError,
    build_query,
    matching_rows,
)
from ..statuses import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
)
from ..store.representative import representative_header
from ..store.storage import StorageArea
from .auditing import record_query

log = logging.getLogger(__name__)


class QueryFailure(Exception):
    def __init__(self, status: int, comment: str, reason: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.reason = reason

    def response(self) -> Dataset:
        answer = Dataset()
        answer.Status = self.status
        answer.ErrorComment = self.comment[:64]
        return answer


def _identifier_values(identifier: Dataset) -> dict[str, str]:
    values = {}
    for element in identifier:
        if not element.keyword or element.tag.group in (0x0000, 0x0002):
            continue
        if element.VR == "SQ":
            values[element.keyword] = ""
            continue
        value = element.value
        if value is None:
            text = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(item) for item in value)
        else:
            text = str(value)
        values[element.keyword] = text
    return values


def parse_level(identifier: Dataset, patient_root: bool) -> Level:
    """The QueryRetrieveLevel of `identifier`, checked against the information model."""
    text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(text)
    except ValueError:
        raise QueryFailure(
            IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"QueryRetrieveLevel {text!r} is not PATIENT, STUDY, SERIES or IMAGE",
            "bad_level",
        ) from None
    if level is Level.PATIENT and not patient_root:
        raise QueryFailure(
            IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            "PATIENT level is not part of the Study Root model",
            "bad_level",
        )
    return level


class FindHandler:
    """Bound to EVT_C_FIND."""

    def __init__(self, engine: Engine, storage: StorageArea, ae_title: str) -> None:
        self._engine = engine
        self._storage = storage
        self._ae_title = ae_title

    def __call__(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        # The query's audit message is synced while the index answers, and is on disk before
        # the first answer leaves.
        on_disk = record_query(event)
        answers = self._answers(event)
        first = next(answers)
        on_disk()
        yield first
        yield from answers

    def _answers(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        try:
            identifier = event.identifier
            patient_root = (
                event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
            )
            level = parse_level(identifier, patient_root)
            values = _identifier_values(identifier)
            try:
                query = build_query(level, values)
            except QueryError as error:
                raise QueryFailure(UNABLE_TO_PROCESS, str(error), "unsupported_key") from None
            with self._engine.connect() as connection:  # one checkout for rows and counts
                rows = list(matching_rows(connection, query))
                computed = computed_values(connection, level, rows, set(values))
        except QueryFailure as failure:
            metrics.FAILURES.labels(reason=f"find_{failure.reason}").inc()
            log.warning("C-FIND refused (0x%04X): %s", failure.status, failure.comment)
            yield failure.status, failure.response()
            return
        except Exception as error:
            metrics.FAILURES.labels(reason="find_index").inc()
            log.error("C-FIND failed: %s", error)
            yield OUT_OF_RESOURCES, None
            return
        log.info("C-FIND at %s level: %d match(es)", level.value, len(rows))
        for row, row_computed in zip(rows, computed, strict=True):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield PENDING, self._answer(identifier, level, values, row, row_computed)
        yield SUCCESS, None

    def _answer(
        self,
        identifier: Dataset,
        level: Level,
        values: dict[str, str],
        row: dict,
        computed: dict,
    ) -> Dataset:
        answer = Dataset()
        answer.QueryRetrieveLevel = level.value
        from_file: list[str] = []
        for keyword in values:
            if keyword in NOT_MATCHED:
                continue
            key = KEYS.get(keyword)
            if key is not None and key.column.name in row:
                value = row[key.column.name]
                setattr(answer, keyword, "" if value is None else value)
            elif keyword in computed:
                setattr(answer, keyword, computed[keyword])
            elif keyword == "RetrieveAETitle":
                answer.RetrieveAETitle = self._ae_title
            elif keyword == "InstanceAvailability":
                answer.InstanceAvailability = "ONLINE"
            else:
                from_file.append(keyword)
        if from_file:
            self._fill_from_file(answer, level, row, from_file, identifier)
        if any(isinstance(v, str) and not v.isascii() for v in answer.values()):
            answer.SpecificCharacterSet = "ISO_IR 192"
        return answer

    def _fill_from_file(
        self, answer: Dataset, level: Level, row: dict, keywords: list[str], identifier: Dataset
    ) -> None:
        stored = representative_header(self._engine, self._storage, level, row) or Dataset()
        for keyword in keywords:
            if keyword in COMPUTED:
                continue  # a count of another level: not applicable here
            if keyword in stored:
                answer[keyword] = stored[keyword]
            else:
                answer[keyword] = identifier[keyword]
                answer[keyword].value = None if answer[keyword].VR != "SQ" else []
