"""A celery-engine cluster on this machine for the tests: receivers (`dicom-node serve`) and
workers (`dicom-node worker`) as separate processes on one PostgreSQL index, one storage area
and one broker (a RabbitMQ vhost or a Redis database of the test's own), with Orthanc as the
PACS that receives the results."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .conftest import RunningNode, configured_node, free_port
from .netns import Host

RABBITMQCTL = "/usr/sbin/rabbitmqctl"
#: a vhost's URL: its user's password is given apart (``jobs.broker_password_file``)
RABBITMQ_URL = "amqp://{user}@127.0.0.1:5672/{vhost}"
#: this suite's Redis database (other suites on this Redis use others)
REDIS_URL = "redis://127.0.0.1:6379/11"


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RABBITMQCTL, *args], capture_output=True, text=True, timeout=60, check=True
    )


@contextmanager
def rabbitmq_down() -> Iterator[None]:
    """The local RabbitMQ's application stopped (every connection closed, new ones refused; the
    Erlang node stays, so that `rabbitmqctl` answers) and started again at the end, whatever
    happens. `rabbitmqctl reset` in between makes it come back empty, as a broker whose disk
    was lost: no queue, message, vhost or user but the default ones."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")


class RabbitVhost:
    """A vhost of the local RabbitMQ for one test, with a user of its own whose password
    (with characters a URL must escape) the nodes read from a file."""

    #: the tests' queues (RabbitMQ declares them with the first publish or consumer)
    QUEUES = ("jobs", "outbox")

    def __init__(self) -> None:
        self.name = f"celery-engine-{uuid.uuid4().hex[:8]}"
        self.password = f"pw:{secrets.token_hex(12)}/@%"
        self.url = RABBITMQ_URL.format(user=self.name, vhost=self.name)

    def add(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("add_user", self.name, self.password)
        rabbitmqctl("set_permissions", "-p", self.name, self.name, ".*", ".*", ".*")

    def purge(self) -> None:
        """Its queues emptied (they may not exist yet)."""
        for queue in self.QUEUES:
            subprocess.run(
                [RABBITMQCTL, "purge_queue", "-p", self.name, queue],
                capture_output=True,
                timeout=60,
            )

    def delete(self) -> None:
        """The vhost and its user gone (either may be gone already: a broker reset)."""
        for command in (("delete_vhost", self.name), ("delete_user", self.name)):
            subprocess.run([RABBITMQCTL, *command], capture_output=True, timeout=60)

    def queued(self, queue: str) -> int:
        listed = rabbitmqctl("list_queues", "-p", self.name, "-q", "name", "messages").stdout
        counts = dict(line.split() for line in listed.splitlines() if line.strip())
        return int(counts.get(queue, 0))


class RabbitDefaultVhost(RabbitVhost):
    """The vhost ``/`` and user ``guest`` that RabbitMQ makes as it starts with an empty
    database: what a broker reset brings back by itself, where a vhost and user of the test's
    own would be missing until made again (and a worker refused a login stops: Celery counts a
    refused login as unrecoverable). Its queues are emptied before and after the test."""

    def __init__(self) -> None:
        self.name = "/"
        self.password = "guest"
        self.url = RABBITMQ_URL.format(user="guest", vhost="%2F")

    def add(self) -> None:
        rabbitmqctl("list_queues", "-p", self.name)  # the server answers
        self.purge()

    def delete(self) -> None:
        self.purge()


def flush_redis() -> None:
    """The test's Redis database emptied (a Redis restarted without its data)."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


@dataclass
class Worker:
    """A `dicom-node worker` process (in its own session, so that killing its group kills the
    Celery pool processes too, as a host that dies would)."""

    config_path: Path
    log_path: Path
    #: where it serves its metrics (`--metrics-port`, all addresses of its host)
    metrics_port: int
    #: what it runs under (``ip netns exec NAME``: another "host"), and that host's address
    prefix: list[str]
    address: str
    process: subprocess.Popen | None = field(default=None)

    def start(self) -> None:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [
                *self.prefix,
                *(sys.executable, "-m", "dicom_node", "--config", str(self.config_path)),
                *("worker", "--metrics-port", str(self.metrics_port)),
            ],
            cwd=self.config_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while " ready." not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def edit_config(self, change) -> None:
        """``change(settings)`` written to its configuration file (read again on SIGHUP)."""
        settings = yaml.safe_load(self.config_path.read_text())
        change(settings)
        self.config_path.write_text(yaml.safe_dump(settings))

    def reload(self) -> None:
        """SIGHUP to the worker's main process."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGHUP)

    def kill(self) -> None:
        """kill -9 of the worker and its pool processes."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            self.process = None


@dataclass
class Cluster:
    """Receivers and workers of one configuration (ports aside)."""

    root: Path
    database_url: str
    broker_url: str
    settings: dict
    #: the broker's password, given to every node in a file of its own (0600)
    broker_password: str | None = None
    receivers: list[RunningNode] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    @property
    def storage(self) -> Path:
        return self.root / "shared-storage"

    def _configured(self, name: str, host: Host | None) -> RunningNode:
        """A cluster node's configuration under ``root/name``, on ``host`` (its addresses, and
        the loopback services as it reaches them) or on this machine's loopback."""
        here = (lambda url: url) if host is None else host.reaching
        settings = {
            **self.settings,
            "peers": {
                name: {**peer, "host": here(peer["host"])}
                for name, peer in self.settings.get("peers", {}).items()
            },
        }
        if host is not None:
            settings["dicom"] = {"host": host.address, "port": free_port(), "workers": 1}
            settings["http"] = {"host": host.address, "port": free_port()}
        jobs = {"engine": "celery", "broker_url": here(self.broker_url), "republish_seconds": 5}
        node = configured_node(
            self.root / name,
            here(self.database_url),
            storage={"path": str(self.storage), "database": here(self.database_url)},
            jobs=jobs,
            **settings,
        )
        if self.broker_password is not None:
            password_file = node.root / "broker.password"
            password_file.write_text(self.broker_password)
            password_file.chmod(0o600)
            jobs["broker_password_file"] = str(password_file)
        node.prefix = host.prefix if host is not None else []
        return node

    def receiver(self, host: Host | None = None) -> RunningNode:
        """A new receiver (started), on ``host`` or this machine's loopback."""
        node = self._configured(f"receiver{len(self.receivers)}", host)
        node.start()
        self.receivers.append(node)
        return node

    def worker(self, host: Host | None = None) -> Worker:
        """A new worker (started, one job process), on ``host`` or this machine's loopback."""
        node = self._configured(f"worker{len(self.workers)}", host)
        node.settings["jobs"]["workers"] = 1
        node.config_path.write_text(yaml.safe_dump(node.settings))
        worker = Worker(
            node.config_path,
            node.root / "worker.log",
            free_port(),
            node.prefix,
            node.settings["dicom"]["host"],
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for node in self.receivers:
            if node.process is not None:
                node.stop(signal.SIGKILL)
