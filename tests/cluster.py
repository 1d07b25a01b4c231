"""A celery-engine cluster on this machine for the tests: receivers (`dicom-node serve`) and
workers (`dicom-node worker`) as separate processes on one PostgreSQL index, one storage area
and one broker (a RabbitMQ vhost or a Redis database of the test's own), with Orthanc as the
PACS that receives the results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .conftest import RunningNode, configured_node, free_port
from .netns import Host

RABBITMQCTL = "/usr/sbin/rabbitmqctl"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/{vhost}"
#: this suite's Redis database (other suites on this Redis use others)
REDIS_URL = "redis://127.0.0.1:6379/11"


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RABBITMQCTL, *args], capture_output=True, text=True, timeout=60, check=True
    )


class RabbitVhost:
    """A vhost of the local RabbitMQ for one test. Deleting it stops the broker for the node
    (connections are closed and refused) and adding it again is a broker back empty: the
    same as a restart that lost its queues, without stopping the other users of the server."""

    def __init__(self) -> None:
        self.name = f"celery-engine-{uuid.uuid4().hex[:8]}"
        self.url = RABBITMQ_URL.format(vhost=self.name)

    def add(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)

    def queued(self, queue: str) -> int:
        listed = rabbitmqctl("list_queues", "-p", self.name, "-q", "name", "messages").stdout
        counts = dict(line.split() for line in listed.splitlines() if line.strip())
        return int(counts.get(queue, 0))


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
        node = configured_node(
            self.root / name,
            here(self.database_url),
            storage={"path": str(self.storage), "database": here(self.database_url)},
            jobs={"engine": "celery", "broker_url": here(self.broker_url), "republish_seconds": 5},
            **settings,
        )
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
