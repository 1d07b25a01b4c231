"""The celery engine end to end: two receivers and two workers as separate processes on one
PostgreSQL index and one storage area, with RabbitMQ (and once Redis) as the broker and Orthanc
as the PACS. Real studies (the shared CT and CR) are sent with DCMTK; a worker is killed mid-job
and the broker goes away and comes back empty; the guarantees of the issue hold:

- a study sent in halves to two receivers is one study and one job, also when one receiver is
  killed before the study is quiet; a duplicate sent to both at once is stored once;
- a job runs on one worker at a time; one killed mid-job (kill -9) is run again by another,
  and its results exist once, delivered once;
- receivers keep acknowledging C-STOREs while the broker is down (RabbitMQ's application
  stopped), and nothing is lost when it comes back empty (reset before it starts again);
- a worker reloads its destinations on SIGHUP without dropping the job it runs;
- a receiver killed mid-study leaves files that the next receiver to start settles, beside a
  receiver that runs (whose files it leaves alone);
- the broker's password, read from a file, is in no log and not on the console.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests
from pynetdicom import AE
from sqlalchemy import func, select

from dicom_node.index.schema import JOB_DONE, OUTBOX_SENT, instances, job_notes, jobs, outbox
from dicom_node.store.storage import NAMES_AHEAD, owner_of

from .cluster import (
    RABBITMQCTL,
    REDIS_URL,
    Cluster,
    RabbitDefaultVhost,
    RabbitVhost,
    flush_redis,
    rabbitmq_down,
    rabbitmqctl,
)
from .conftest import CR_CHEST, CT_SERIES, RunningNode, new_database
from .netns import Hosts, unavailable
from .orthanc import OrthancPeer
from .test_durability import wait_until
from .test_one_node_per_store import serve_beside

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def rabbit_vhost(request):
    """The test's RabbitMQ vhost; ``/`` for a test marked ``broker_reset`` (the vhost and user
    a reset broker brings back by itself)."""
    if not Path(RABBITMQCTL).exists():
        pytest.skip("rabbitmqctl is not installed")
    vhost = (
        RabbitDefaultVhost() if request.node.get_closest_marker("broker_reset") else RabbitVhost()
    )
    try:
        vhost.add()
    except subprocess.CalledProcessError as error:
        pytest.skip(f"no RabbitMQ server answers rabbitmqctl: {error.stderr.strip()}")
    yield vhost
    vhost.delete()


@pytest.fixture
def redis_broker():
    import redis

    try:
        flush_redis()
    except redis.exceptions.ConnectionError as error:
        pytest.skip(f"no Redis server answers at {REDIS_URL}: {error}")
    yield REDIS_URL
    flush_redis()


@pytest.fixture
def postgresql_url(tmp_path):
    with new_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def orthanc(tmp_path):
    peer = OrthancPeer(tmp_path / "orthanc")
    peer.start()
    yield peer
    peer.stop()


def make_cluster(
    tmp_path, database_url: str, broker_url: str, orthanc: OrthancPeer, password: str | None = None
) -> Cluster:
    return Cluster(
        tmp_path,
        database_url,
        broker_url,
        {
            "study": {"stable_seconds": 2, "check_interval_seconds": 0.2},
            "peers": {"pacs": orthanc.peer},
            "results": {"destinations": ["pacs"]},
            "inference": {"device": "cpu"},
            "outbox": {"first_retry_seconds": 1},
        },
        password,
    )


@pytest.fixture
def rabbit_cluster(tmp_path, postgresql_url, rabbit_vhost, orthanc):
    cluster = make_cluster(
        tmp_path, postgresql_url, rabbit_vhost.url, orthanc, rabbit_vhost.password
    )
    yield cluster
    cluster.stop()


def ct_halves(tmp_path) -> tuple[list, str]:
    """40 slices of the shared chest CT in two folders of 20, and the study's UID."""
    slices = sorted(CT_SERIES.glob("*.dcm"))[100:140]
    folders = [tmp_path / "ct-first-half", tmp_path / "ct-second-half"]
    for folder, part in zip(folders, (slices[:20], slices[20:]), strict=True):
        folder.mkdir()
        for path in part:
            shutil.copy(path, folder / path.name)
    return folders, str(pydicom.dcmread(slices[0], stop_before_pixels=True).StudyInstanceUID)


def send_together(sends: list[tuple[RunningNode, object]]) -> None:
    """dcmsend each (receiver, folder or file) at the same time; each must succeed."""
    processes = [
        subprocess.Popen(
            ["dcmsend", "-aec", "AI_NODE", "--scan-directories"]
            + [node.settings["dicom"]["host"], str(node.port), str(what)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node, what in sends
    ]
    for process in processes:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output


def http_address(node: RunningNode) -> str:
    return f"{node.settings['http'].get('host', '127.0.0.1')}:{node.http_port}"


def rows(engine, *columns, where=None) -> list:
    statement = select(*columns)
    if where is not None:
        statement = statement.where(where)
    with engine.connect() as connection:
        return list(connection.execute(statement))


def jobs_by_study(engine) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for study_uid, state in rows(engine, jobs.c.study_instance_uid, jobs.c.state):
        found.setdefault(study_uid, []).append(state)
    return found


def all_jobs_done(engine, studies: int) -> bool:
    found = jobs_by_study(engine)
    return len(found) == studies and all(set(s) == {JOB_DONE} for s in found.values())


def assert_results_exist_once(cluster: Cluster, engine, results: int) -> None:
    """The node's results stored once each, each delivered once; every stored file is indexed
    (a duplicate received twice left no second file)."""
    own = rows(
        engine, instances.c.sop_instance_uid, where=instances.c.calling_ae_title == "AI_NODE"
    )
    assert len(own) == results
    deliveries = rows(engine, outbox.c.sop_instance_uid, outbox.c.state, outbox.c.attempts)
    assert sorted(uid for uid, _, _ in deliveries) == sorted(uid for (uid,) in own)
    assert {(state, attempts) for _, state, attempts in deliveries} == {(OUTBOX_SENT, 1)}
    with engine.connect() as connection:
        indexed = connection.execute(select(func.count()).select_from(instances)).scalar_one()
    # (empty files are the names the receivers create ahead of time)
    files = [p for p in cluster.storage.glob("??/??/*.dcm") if p.stat().st_size]
    assert len(files) == indexed


LOOPBACK, NAMESPACES = "loopback", "network namespaces"


@pytest.fixture
def hosts(request):
    """Where the cluster's processes run: each receiver and its worker in a network namespace
    of its own where namespaces can be made (root, as on CI), else all on this machine's
    loopback. A test parametrized with ``indirect=True`` names where (namespaces skipped, with
    the reason, where they cannot be made)."""
    reason = unavailable()
    where = getattr(request, "param", LOOPBACK if reason else NAMESPACES)
    if where == LOOPBACK:
        yield [None, None]
        return
    if reason:
        pytest.skip(reason)
    made = Hosts(forwarded_ports=[5432, 5672])
    try:
        yield [made.add(), made.add()]
    finally:
        made.remove()


def test_two_receivers_and_two_workers_make_one_study_one_job_and_results_once(
    rabbit_cluster, rabbit_vhost, orthanc, tmp_path, hosts
):
    first, second = (rabbit_cluster.receiver(host) for host in hosts)
    for host in hosts:
        rabbit_cluster.worker(host)
    (half_1, half_2), ct_uid = ct_halves(tmp_path)
    # The CT in halves, one to each receiver, and the CR to both at once.
    send_together(
        [
            (first, half_1),
            (second, half_2),
            (first, CR_CHEST),
            (second, CR_CHEST),
        ]
    )
    # One receiver dies before the studies are quiet: the other completes and publishes them.
    first.stop(signal.SIGKILL)
    engine = second.engine()
    wait_until(lambda: all_jobs_done(engine, studies=2), timeout=150)
    assert [len(states) for states in jobs_by_study(engine).values()] == [1, 1]
    cr = rows(engine, instances.c.sop_instance_uid, where=instances.c.calling_ae_title != "AI_NODE")
    assert len(cr) == 41  # 40 CT slices, the CR once
    wait_until(
        lambda: {s for _, s in rows(engine, outbox.c.id, outbox.c.state)} == {OUTBOX_SENT},
        timeout=60,
    )
    assert_results_exist_once(rabbit_cluster, engine, results=4)
    in_pacs = orthanc.instances_of_study(ct_uid)
    assert sorted(i["Modality"] for i in in_pacs) == ["SEG", "SR"]
    notes = [text for (text,) in rows(engine, job_notes.c.text)]
    assert any("ct_tissue 1.0.0 on cpu" in text for text in notes), notes
    workers_logs = "".join(worker.log() for worker in rabbit_cluster.workers)
    assert workers_logs.count(" done") == 2
    # Each worker's /metrics says which models its processes ran, and where.
    metrics = "".join(
        requests.get(f"http://{worker.address}:{worker.metrics_port}/metrics", timeout=10).text
        for worker in rabbit_cluster.workers
    )
    for model in ("ct_tissue", "cxr_pneumonia"):
        assert f'dicom_node_model_run_seconds_count{{device="cpu",model="{model}"}} 1.0' in metrics
    # Every node connected with the broker's password from its file; no log and no console shows it.
    logs = workers_logs + first.log() + second.log()
    assert f"Connected to amqp://{rabbit_vhost.name}:**@" in logs
    assert rabbit_vhost.password not in logs
    console = requests.get(f"http://{http_address(second)}/ui/api/config", timeout=30)
    assert console.json()["configuration"]["jobs"]["broker_password"] == "********"
    assert rabbit_vhost.password not in console.text


# Also on loopback: there the nodes meet the stopped RabbitMQ itself (connections refused),
# where in namespaces they meet the forwarder (`tests/netns.py`), which accepts and then closes.
@pytest.mark.parametrize("hosts", [LOOPBACK, NAMESPACES], indirect=True)
@pytest.mark.broker_reset
def test_a_worker_killed_mid_job_and_a_broker_back_empty_lose_nothing(
    rabbit_cluster, rabbit_vhost, orthanc, tmp_path, hosts
):
    receiver = rabbit_cluster.receiver(hosts[0])
    doomed, survivor = (rabbit_cluster.worker(host) for host in hosts)
    (half_1, half_2), ct_uid = ct_halves(tmp_path)
    send_together([(receiver, half_1), (receiver, half_2)])
    engine = receiver.engine()
    # Whichever worker took the job is killed as soon as it started it.
    wait_until(lambda: "job 1 started" in doomed.log() + survivor.log(), timeout=60)
    if "job 1 started" in survivor.log():
        doomed, survivor = survivor, doomed
    doomed.kill()
    wait_until(lambda: all_jobs_done(engine, studies=1), timeout=120)
    assert "job 1 started (attempt 2)" in survivor.log()
    notes = [text for (text,) in rows(engine, job_notes.c.text)]
    assert any("the worker running it died (attempt 1" in text for text in notes), notes

    # The broker stops: the receiver still acknowledges every C-STORE (dcmsend succeeds), the
    # instance is indexed and its job waits in the index.
    with rabbitmq_down():
        send_together([(receiver, CR_CHEST)])
        wait_until(lambda: len(jobs_by_study(engine)) == 2, timeout=30)  # the CR is quiet
        wait_until(lambda: "broker unavailable" in receiver.log(), timeout=30)
        assert len(rows(engine, instances.c.sop_instance_uid)) == 40 + 2 + 1  # CT, results, CR
        assert sorted(s for states in jobs_by_study(engine).values() for s in states) == [
            JOB_DONE,
            "pending",
        ]
        rabbitmqctl("reset")  # it comes back empty: queues and messages lost
    # The job is published again and run; the deliveries due meanwhile are made.
    wait_until(lambda: all_jobs_done(engine, studies=2), timeout=120)
    wait_until(
        lambda: {s for _, s in rows(engine, outbox.c.id, outbox.c.state)} == {OUTBOX_SENT},
        timeout=60,
    )
    assert_results_exist_once(rabbit_cluster, engine, results=4)
    assert sorted(i["Modality"] for i in orthanc.instances_of_study(ct_uid)) == ["SEG", "SR"]


def another_study(source: Path, folder: Path) -> Path:
    """A copy of the instance at `source` as the only instance of a new study."""
    from pydicom.uid import generate_uid

    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    folder.mkdir()
    dataset.save_as(folder / "copy.dcm", enforce_file_format=True)
    return folder


def test_a_worker_reloads_its_destinations_on_sighup_without_dropping_a_running_job(
    rabbit_cluster, tmp_path
):
    receiver = rabbit_cluster.receiver()
    worker = rabbit_cluster.worker()
    engine = receiver.engine()
    # A file that fails check-config is refused, logged, and the worker goes on with its own.
    worker.edit_config(lambda settings: settings["results"].update(destinations=["nowhere"]))
    worker.reload()
    wait_until(lambda: "configuration reload refused" in worker.log(), timeout=60)
    assert "results.destinations names unknown peers: nowhere" in worker.log()

    # A job runs; it is held in the index (the outbox locked) while the destinations change.
    send_together([(receiver, CR_CHEST)])
    wait_until(lambda: "job 1 started" in worker.log(), timeout=60)
    with engine.connect() as holding:
        holding.exec_driver_sql("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        worker.edit_config(lambda settings: settings["results"].update(destinations=[]))
        worker.reload()
        wait_until(
            lambda: (
                "changed results.destinations" in worker.log() and "job 1 done" not in worker.log()
            ),
            timeout=60,
        )
        holding.rollback()
    # It ends on the configuration it started with: its results go to the PACS.
    wait_until(lambda: all_jobs_done(engine, studies=1), timeout=90)
    assert "Restarting celery worker" not in worker.log() and worker.process.poll() is None
    notes = [text for (text,) in rows(engine, job_notes.c.text)]
    assert not any("died" in text for text in notes), notes
    assert len(rows(engine, outbox.c.id)) == 2  # its SEG and SR

    # The next job runs on the reloaded configuration: its results go nowhere.
    send_together([(receiver, another_study(CR_CHEST, tmp_path / "another"))])
    wait_until(lambda: all_jobs_done(engine, studies=2), timeout=90)
    own = rows(
        engine, instances.c.sop_instance_uid, where=instances.c.calling_ae_title == "AI_NODE"
    )
    assert len(own) == 4
    assert len(rows(engine, outbox.c.id)) == 2


def test_on_redis_a_job_lost_with_the_broker_data_is_published_again(
    tmp_path, postgresql_url, redis_broker, orthanc
):
    cluster = make_cluster(tmp_path, postgresql_url, redis_broker, orthanc)
    try:
        receiver = cluster.receiver()
        send_together([(receiver, CR_CHEST)])
        engine = receiver.engine()
        wait_until(lambda: "1 job(s) published" in receiver.log(), timeout=30)
        flush_redis()  # Redis restarted without its data: the message is gone
        cluster.worker()
        wait_until(lambda: all_jobs_done(engine, studies=1), timeout=90)
        assert receiver.log().count("1 job(s) published") >= 2  # once, then again
        wait_until(
            lambda: {s for _, s in rows(engine, outbox.c.id, outbox.c.state)} == {OUTBOX_SENT},
            timeout=60,
        )
        assert_results_exist_once(cluster, engine, results=2)
    finally:
        cluster.stop()


def stored(cluster: Cluster) -> dict[str, int]:
    """The storage area's files (relative paths) and their sizes."""
    return {
        str(path.relative_to(cluster.storage)): path.stat().st_size
        for path in cluster.storage.glob("??/??/*.dcm")
    }


def test_a_receiver_killed_mid_study_is_recovered_while_another_runs(rabbit_cluster):
    first, second = rabbit_cluster.receiver(), rabbit_cluster.receiver()
    engine = second.engine()

    def indexed() -> set[str]:
        return {path for (path,) in rows(engine, instances.c.path)}

    # Part of the CT to the first receiver, killed (SIGKILL) with the association open: fewer
    # instances than it creates files ahead, so some of those are left whatever the timing.
    slices = [pydicom.dcmread(path) for path in sorted(CT_SERIES.glob("*.dcm"))[: NAMES_AHEAD // 2]]
    ae = AE("SENDER")
    ae.add_requested_context(slices[0].SOPClassUID, slices[0].file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", first.port, ae_title="AI_NODE")
    assert association.is_established
    try:
        for dataset in slices:
            assert association.send_c_store(dataset).Status == 0x0000
        assert len(indexed()) == len(slices)
        first.stop(signal.SIGKILL)
        wait_until(lambda: not association.is_alive(), timeout=30)
    finally:
        association.abort()
    # It left files without a row: the empty ones it made ahead.
    left = {path for path in stored(rabbit_cluster) if path not in indexed()}
    assert left
    assert len({owner_of(path) for path in left}) == 1

    # The second receiver goes on (its files, empty ones made ahead included, are its own),
    # and the first is started again beside it: it settles what the dead one left, only that.
    send_together([(second, CR_CHEST)])
    kept = {path for path in stored(rabbit_cluster) if owner_of(path) != owner_of(next(iter(left)))}
    first.start()
    assert "recovered the files of 1 receiving process(es) gone" in first.log()
    now = stored(rabbit_cluster)
    assert not left & set(now)
    assert kept <= set(now)
    assert {path for path, size in now.items() if size} <= indexed()


def test_the_embedded_node_and_a_cluster_never_share_a_storage_area(rabbit_cluster, tmp_path):
    receiver = rabbit_cluster.receiver()
    result = serve_beside(receiver, tmp_path, jobs={})  # the embedded node
    assert result.returncode == 3
    assert "is in use by another node (the nodes of a celery cluster" in result.stderr
