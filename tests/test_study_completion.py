"""Studies sent at once, over several associations and receiving processes, each complete once.

Every study here arrives without a pause longer than `stable_seconds`, so each must get exactly
one job: a second one would run the models twice and deliver their results twice.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, fields, replace
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, update

from dicom_node.config import DuplicatePolicy
from dicom_node.index.database import open_engine
from dicom_node.index.jobs import claim
from dicom_node.index.rows import InstanceAttributes
from dicom_node.index.schema import JOB_PENDING, JOB_RUNNING, STUDY_COMPLETE, jobs, studies
from dicom_node.index.writer import (
    STUDY_TOUCH_INTERVAL_SECONDS,
    IndexWriter,
    NewInstance,
    Outcome,
)
from dicom_node.jobs.stability import StabilityMonitor

from .test_durability import storescu, wait_until, write_study


def parallel_sends(folder: Path) -> tuple[list[str], list[Path]]:
    """Four studies of one association each, and a fifth whose halves go over two at once."""
    uids = [generate_uid() for _ in range(5)]
    folders = []
    for number, uid in enumerate(uids[:4]):
        write_study(folder / f"study{number}", 12, uid)
        folders.append(folder / f"study{number}")
    write_study(folder / "whole", 24, uids[4])
    files = sorted((folder / "whole").iterdir())
    for half, names in enumerate((files[:12], files[12:])):
        (folder / f"half{half}").mkdir()
        for name in names:
            shutil.copy(name, folder / f"half{half}" / name.name)
        folders.append(folder / f"half{half}")
    return uids, folders


def all_complete(engine, uids: list[str]) -> bool:
    with engine.connect() as connection:
        states = connection.execute(
            select(studies.c.state).where(studies.c.study_instance_uid.in_(uids))
        ).scalars()
        return list(states) == [STUDY_COMPLETE] * len(uids)


def test_studies_sent_in_parallel_get_one_job_each(make_node, tmp_path):
    node = make_node(
        dicom={"workers": 2},
        study={"stable_seconds": 2, "check_interval_seconds": 0.1},
    )
    node.start()
    engine = node.engine()
    for round_ in range(3):
        uids, folders = parallel_sends(tmp_path / f"round{round_}")
        with ThreadPoolExecutor(len(folders)) as pool:
            results = list(pool.map(lambda folder: storescu(node.port, folder), folders))
        assert [result.returncode for result in results] == [0] * len(folders)
        wait_until(lambda uids=uids: all_complete(engine, uids), timeout=60)
        with engine.connect() as connection:
            per_study = dict(
                connection.execute(
                    select(jobs.c.study_instance_uid, func.count())
                    .where(jobs.c.study_instance_uid.in_(uids))
                    .group_by(jobs.c.study_instance_uid)
                ).all()
            )
        assert per_study == {uid: 1 for uid in uids}


def new_instance(study_uid: str, series_uid: str, received_at: float) -> NewInstance:
    uid = generate_uid()
    attributes = InstanceAttributes(
        **{field.name: "" for field in fields(InstanceAttributes) if field.default is MISSING},
    )
    attributes = replace(
        attributes,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        instance_number=None,
        series_number=None,
    )
    return NewInstance(attributes, "1.2.840.10008.1.2.1", f"{uid}.dcm", 1, "SCU", received_at)


def test_a_study_is_not_complete_while_another_process_still_receives_it(database_url):
    """Two receiving processes commit one study's instances out of order: the earlier time,
    written last, must not hide the later one from the stability monitor."""
    engine = open_engine(database_url)
    first, second = (IndexWriter(engine, DuplicatePolicy.KEEP_FIRST) for _ in range(2))
    study, series = generate_uid(), generate_uid()
    try:
        first.submit(new_instance(study, series, 100.9)).result()
        second.submit(new_instance(study, series, 100.5)).result()
        # Within the touch interval of its last write: the first process leaves the time.
        first.submit(new_instance(study, series, 101.8)).result()
    finally:
        first.close()
        second.close()
    stable = 2.0
    monitor = StabilityMonitor(engine, stable, interval=1.0)
    assert monitor.run_once(100.5 + stable + STUDY_TOUCH_INTERVAL_SECONDS + 0.2) == []
    assert monitor.run_once(101.8 + stable + STUDY_TOUCH_INTERVAL_SECONDS) == [study]
    assert monitor.run_once(200.0) == []
    with engine.connect() as connection:
        assert (
            connection.execute(
                select(func.count()).where(jobs.c.study_instance_uid == study)
            ).scalar_one()
            == 1
        )
    engine.dispose()


def test_rows_queued_while_another_process_commits_join_the_next_commit(tmp_path):
    """A receiving process waiting for its turn at the index (another one commits) takes the
    rows queued meanwhile into its commit: one flush of the index for all of them."""
    engine = open_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    turn = multiprocessing.Lock()
    batches: list[int] = []
    writer = IndexWriter(engine, DuplicatePolicy.KEEP_FIRST, on_batch=batches.append, lock=turn)
    study, series = generate_uid(), generate_uid()
    turn.acquire()  # another receiving process is committing
    try:
        pending = [writer.submit(new_instance(study, series, 100.0))]
        time.sleep(0.5)  # let the writer take it and wait for its turn
        pending += [writer.submit(new_instance(study, series, 100.0 + i)) for i in (1, 2)]
    finally:
        turn.release()
    try:
        assert [future.result(timeout=30).outcome for future in pending] == [Outcome.STORED] * 3
    finally:
        writer.close()
        engine.dispose()
    assert batches == [3]


def test_a_study_never_has_two_jobs_running_across_runners(database_url):
    """Two pending jobs of one study (a retry beside a new one): while another runner holds
    the first under the study's lock, not yet committed, this runner must not take the second."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: no runner claims beside another")
    engine = open_engine(database_url)
    writer = IndexWriter(engine, DuplicatePolicy.KEEP_FIRST)
    study = generate_uid()
    writer.submit(new_instance(study, generate_uid(), 100.0)).result()
    writer.close()
    with engine.begin() as connection:
        first, second = (
            connection.execute(
                jobs.insert().values(
                    study_instance_uid=study, state=JOB_PENDING, created_at=1.0, updated_at=1.0
                )
            ).inserted_primary_key[0]
            for _ in range(2)
        )
    other = engine.connect()
    other_runner = other.begin()
    other.execute(
        select(studies.c.study_instance_uid)
        .where(studies.c.study_instance_uid == study)
        .with_for_update()
    )
    other.execute(update(jobs).where(jobs.c.id == first).values(state=JOB_RUNNING))
    with ThreadPoolExecutor(1) as pool:
        claimed = pool.submit(claim, engine)
        time.sleep(0.5)  # let the claim reach the study's lock (it must then wait there)
        other_runner.commit()
        assert claimed.result(timeout=30) is None
    other.close()
    assert claim(engine) is None  # the first still runs
    engine.dispose()
