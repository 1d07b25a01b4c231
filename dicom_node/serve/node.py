"""`dicom-node serve`: the receiving processes, the stability monitor and the HTTP server.

The main process prepares storage and index, then runs one receiver, the monitor and HTTP;
`dicom.workers - 1` more receivers run in child processes on the same port, started again if
they die. SIGTERM or SIGINT stops accepting associations, lets open ones finish (bounded), and
exits. SIGHUP reloads the configuration (`config.live`): the main process reads and checks the
files, then hands the checked configuration to its parts and sends it down a pipe to each
receiving child, so every process runs the very configuration that was checked (a child reading
the files itself could read a later, unchecked edit).
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import multiprocessing
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Lock as LockType
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import config as pydicom_config
from pynetdicom import evt
from sqlalchemy import Engine

from ..audit import close_trail, messages, open_trail, record
from ..config import ConfigError, JobEngine, NodeConfig
from ..config.live import LiveConfiguration, reload_on_sighup
from ..index.clock import DatabaseClock
from ..index.database import open_engine, reading_engine
from ..index.receiver_leases import GoneOwners, ReceiverLease
from ..logging_setup import configure_logging
from ..periodic import PeriodicThread
from ..statuses import SUCCESS
from ..store.lock import LockShare, StorageLocked, join_cluster, take_lock
from ..store.recovery import reconcile
from ..store.storage import NAMES_AHEAD, StorageArea
from .listening import listen
from .metrics_folder import use_metrics_folder, use_temporary_metrics_folder

if TYPE_CHECKING:  # imported for real only once `serve` has set up the metrics folder
    from ..dimse.connections import SharedCounts

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 30.0
_SUPERVISION_SECONDS = 1.0


@dataclass(frozen=True)
class SharedState:
    """What the receiving processes share: the listening sockets (plain DICOM, DICOM over
    TLS; either may be off), their open connections and requested associations, and on SQLite
    a lock queueing their index commits (SQLite's busy handler sleeps for milliseconds at a
    time), and the storage area's lock, which each holds while it lives."""

    plain_socket: socket.socket | None
    tls_socket: socket.socket | None
    loads: SharedCounts
    associations: SharedCounts
    index_lock: LockType | None
    storage_lock: LockShare


class Receiver:
    """pynetdicom's listeners (plain, TLS) with their handlers and index writer."""

    def __init__(self, config: NodeConfig, shared: SharedState, slot: int) -> None:
        from .. import metrics
        from ..dimse.ae import SharedListener, access_handlers, build_ae
        from ..dimse.find import FindHandler
        from ..dimse.retrieve import GetHandler, MoveHandler
        from ..dimse.store import StoreHandler
        from ..dimse.tls import server_context
        from ..index.writer import IndexWriter
        from ..store.ingest import Ingest

        # Value validation (regular expressions on every element pynetdicom encodes or
        # decodes) costs more than storing an instance; the node stores bytes as received.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
        self.engine = open_engine(config.storage.database_url, create=False)
        #: in a cluster, this process's lock on the owner its files' names start with
        self.lease = ReceiverLease(self.engine) if config.jobs.engine == JobEngine.CELERY else None
        self.storage = storage = StorageArea(
            config.storage.path,
            names_ahead=NAMES_AHEAD,
            owner=self.lease.owner if self.lease else "",
        )
        self.writer = IndexWriter(
            self.engine,
            config.storage.duplicates,
            on_batch=metrics.INDEX_BATCH.observe,
            lock=shared.index_lock,
        )
        #: the durable store path, shared by C-STORE and (in the main process) STOW-RS
        self.ingest = Ingest(
            storage,
            self.writer,
            config.storage.duplicates,
            config.dicom.inflated_limit,
            clock=node_clock(config, self.engine),
        )
        self.ae = build_ae(config, shared.loads, shared.associations, slot)
        store = StoreHandler(self.ingest)
        reader = reading_engine(self.engine)
        self._move = MoveHandler(reader, storage, config)
        handlers = access_handlers(self.ae) + [
            (evt.EVT_C_ECHO, lambda _event: SUCCESS),
            (evt.EVT_C_STORE, store),
            (evt.EVT_CONN_CLOSE, store.association_closed),
            (evt.EVT_C_FIND, FindHandler(reader, storage, config.ae_title)),
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_GET, GetHandler(reader, storage)),
        ]
        listeners: list[tuple[socket.socket | None, ssl.SSLContext | None]] = [
            (shared.plain_socket, None)
        ]
        if shared.tls_socket is not None:
            listeners.append((shared.tls_socket, server_context(config.dicom.tls)))
        self.servers = [
            self.ae.make_server(
                listening.getsockname(),
                evt_handlers=handlers,
                ssl_context=ssl_context,
                server_class=SharedListener,
                listening_socket=listening,
            )
            for listening, ssl_context in listeners
            if listening is not None
        ]
        self._threads = [
            threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
            for server in self.servers
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def reconfigure(self, config: NodeConfig) -> None:
        """Take over a reloaded configuration's peers and AE rules for the next associations."""
        self.ae.apply_access_rules(config)
        self._move.config = config

    def listening(self) -> bool:
        """Whether this receiver still accepts associations (its listener threads run)."""
        return all(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        """Stop accepting, give open associations time to finish, then close the index."""
        for server in self.servers:
            server.shutdown()
            server.server_close()
        deadline = time.monotonic() + _DRAIN_SECONDS
        # Only established associations have work to finish; a connection that never sent
        # an association request (a port probe) would hold its thread until the ACSE timeout.
        while time.monotonic() < deadline and any(
            association.is_established for association in self.ae.active_associations
        ):
            time.sleep(0.1)
        for association in self.ae.active_associations:
            association.abort()
        self.writer.close()
        self.storage.close()
        if self.lease is not None:
            self.lease.release()
        self.engine.dispose()


def node_clock(config: NodeConfig, engine: Engine) -> Callable[[], float]:
    """The clock that stamps received instances and decides that a study is quiet: this
    host's, or in a cluster the database's, one clock for every receiver."""
    return DatabaseClock(engine) if config.jobs.engine == JobEngine.CELERY else time.time


def _stop_on_signal() -> threading.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = threading.Event()

    def _handler(signum, _frame) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def open_audit_trail(config: NodeConfig) -> None:
    """This process's audit trail (each process of the node opens its own)."""
    open_trail(config.audit, config.audit_file, config.ae_title)


def _child_receiver(
    config: NodeConfig, shared: SharedState, slot: int, updates: Connection
) -> None:
    configure_logging(config.logging.level)
    open_audit_trail(config)
    stop = _stop_on_signal()
    # A SIGHUP to the whole process group is the main process's to handle; it sends the result.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    receiver = Receiver(config, shared, slot)
    receiver.start()
    # A main process killed outright must not leave receivers holding the port.
    parent = multiprocessing.parent_process()
    assert parent is not None  # this runs in a child process
    while not stop.wait(_SUPERVISION_SECONDS):
        if not parent.is_alive():
            log.warning("the node's main process is gone: stopping this receiver")
            break
        while updates.poll():
            receiver.reconfigure(updates.recv())
            log.info("receiving process %d: reloaded configuration applied", slot)
    receiver.stop()
    close_trail()


def _start_receiver(context, config: NodeConfig, shared: SharedState, slot: int):
    """The child process and the end of its pipe that sends it reloaded configurations."""
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_receiver, args=(config, shared, slot, receiving), name=f"receiver-{slot}"
    )
    process.start()
    receiving.close()
    return process, sending


def _replace_if_dead(child, context, config: NodeConfig, shared: SharedState, slot: int):
    """A receiving process that died (killed, out of memory) is started again."""
    process, sending = child
    if process.is_alive():
        return child
    sending.close()
    log.error("receiving process %s exited with code %s: starting it again", slot, process.exitcode)
    for counts in (shared.loads, shared.associations):
        counts[slot] = 0  # its connections died with it (and it wrote nothing else)
    return _start_receiver(context, config, shared, slot)


def _listen(host: str, port: int | None, key: str) -> socket.socket | None:
    """The listening socket of a configured DICOM port (None: that listener is off),
    non-blocking: every receiving process races to accept from it (`dimse.ae.SharedListener`)."""
    if port is None:
        return None
    listening = listen(host, port, key, backlog=128)
    listening.setblocking(False)
    return listening


def _record_configuration(config_paths: Sequence[Path]) -> None:
    for config_path in config_paths:
        digest = hashlib.sha256(config_path.read_bytes()).digest()
        record(messages.configuration_loaded(str(config_path.resolve()), digest))


def _recover_gone_receivers(engine: Engine, storage: StorageArea) -> None:
    """Recovery of the files the cluster's receiving processes that are gone left."""
    owners = GoneOwners(engine)
    try:
        reconcile(engine, storage, may_recover=owners)
    finally:
        owners.close()
    if owners.gone:
        log.info("recovered the files of %d receiving process(es) gone", len(owners.gone))


def serve(config: NodeConfig, config_paths: Sequence[Path] = ()) -> None:
    """Run the node until SIGTERM/SIGINT; `config_paths` are the files `config` was read from
    (the file and its local override), read again on SIGHUP."""
    reload_requested = reload_on_sighup()  # before anything: SIGHUP's default is to end
    storage = StorageArea(config.storage.path)
    cluster = config.jobs.engine == JobEngine.CELERY
    patience = _DRAIN_SECONDS + 2 * _SUPERVISION_SECONDS + 5
    try:
        if cluster:
            lock, alone = join_cluster(storage.root, patience)
        else:
            lock, alone = take_lock(storage.root, patience), True
    except StorageLocked as error:
        raise ConfigError(str(error)) from None
    storage.prepare()
    try:
        open_audit_trail(config)
    except OSError as error:
        raise ConfigError(
            f"audit.file: cannot open {config.audit_file}: {error.strerror}"
        ) from None
    _record_configuration(config_paths)
    # Must precede the first import of prometheus_client in this process; the receiving
    # processes and the job workers inherit it. A cluster's nodes each keep their own.
    if cluster:
        use_temporary_metrics_folder("dicom-node-")
    else:
        use_metrics_folder(storage.root / "metrics")
    from ..console.context import ConsoleContext
    from ..dimse.tls import client_args, server_context
    from ..index.statistics import StatisticsRefresher
    from ..jobs.runner import JobRunner
    from ..jobs.stability import StabilityMonitor
    from ..outbox.destinations.fhir_server import open_fhir_client
    from ..outbox.queue import open_outbox
    from ..outbox.sender import OutboxSender
    from .config_check import checked_config
    from .http_app import HttpServer, check_http, create_app, open_http_socket

    fhir = open_fhir_client(config)
    check_http(config.http)
    local = config.jobs.engine == JobEngine.LOCAL
    if local and config.inference.device.startswith("cuda"):  # a GPU this host lacks: stop
        from ..jobs.bundles import model_device

        model_device(config.inference)
    engine = open_engine(config.storage.database_url, create=True)
    if alone:
        reconcile(engine, storage)
    else:  # other receivers may be writing files their rows do not name yet: not theirs
        _recover_gone_receivers(engine, storage)
    context = multiprocessing.get_context("spawn")
    # A certificate, key or CA file that cannot be loaded stops the node here, named.
    if config.dicom.tls.port is not None:
        server_context(config.dicom.tls)
    for peer in config.peers.values():
        client_args(config, peer)
    shared = SharedState(
        plain_socket=_listen(config.dicom.host, config.dicom.port, "dicom.port"),
        tls_socket=_listen(config.dicom.host, config.dicom.tls.port, "dicom.tls.port"),
        loads=context.RawArray("i", config.dicom.workers),
        associations=context.RawArray("i", config.dicom.workers),
        index_lock=context.Lock() if engine.dialect.name == "sqlite" else None,
        storage_lock=lock.share(),
    )
    http_socket = open_http_socket(config.http)
    stop = _stop_on_signal()
    live = LiveConfiguration(config_paths[0] if config_paths else "", config, checked_config)
    receiver = Receiver(config, shared, 0)
    children = {
        slot: _start_receiver(context, config, shared, slot)
        for slot in range(1, config.dicom.workers)
    }
    #: held while a child is replaced or sent a configuration, so none starts with a stale one
    children_lock = threading.Lock()

    def send_to_children(new: NodeConfig) -> None:
        with children_lock:
            for process, sending in children.values():
                try:
                    sending.send(new)
                except OSError:  # it died: replaced, with the new configuration, shortly
                    log.warning("receiving process %s is gone: not reconfigured", process.name)

    receiver.start()
    statistics = StatisticsRefresher(engine)
    statistics.start()
    box = open_outbox(config, engine)
    if alone:
        box.recover()
    #: what takes over a reloaded configuration besides the receivers and the console
    reconfigurable: list[Callable[[NodeConfig], None]] = []
    if cluster:  # the workers run jobs and deliveries; this node publishes them
        from ..jobs.publisher import JobPublisher

        lock.share_with_cluster()
        publisher = JobPublisher(config, engine, storage, box)
        background: list[PeriodicThread | JobRunner] = [publisher]
        reconfigurable = [publisher.reconfigure]  # the routes' queues
        take_jobs = publisher.wake
    else:
        # Each hand-over wakes the next stage: a new job row its runner, a finished job (its
        # results in the outbox) the sender; their 1 s rounds only catch up with the rest.
        sender = OutboxSender(config, box, fhir)
        runner = JobRunner(config, engine, on_finished=sender.wake)
        background = [sender, runner]
        reconfigurable = [runner.reconfigure, sender.reconfigure]
        take_jobs = runner.wake
    monitor = StabilityMonitor(
        engine,
        config.study.stable_seconds,
        config.study.check_interval_seconds,
        clock=node_clock(config, engine),
        on_jobs=take_jobs,
    )
    monitor.start()
    for worker in background:
        worker.start()
    console = ConsoleContext(config, engine, storage, box, receiver.ingest, live)
    for listener in (
        lambda _new: _record_configuration(live.files),
        receiver.reconfigure,
        send_to_children,
        *reconfigurable,
        console.reconfigure,
    ):
        live.subscribe(listener)
    http = HttpServer(
        create_app(
            engine,
            storage,
            config.ae_title,
            config.http,
            receiver.ingest,
            dicom_listening=receiver.listening,
            console=console,
        ),
        config.http,
        http_socket,
    )
    http.start()
    record(messages.application_activity(True, getpass.getuser()))
    log.info(
        "%s listening for DICOM on %s, plain port %s, TLS port %s (%d receiving process(es)), "
        "HTTP on %s:%d, index %s",
        config.ae_title,
        config.dicom.host,
        config.dicom.port or "off",
        config.dicom.tls.port or "off",
        config.dicom.workers,
        config.http.host,
        config.http.port,
        engine.url.render_as_string(hide_password=True),
    )
    while not stop.wait(_SUPERVISION_SECONDS):
        if reload_requested.is_set() and config_paths:
            reload_requested.clear()
            live.reload()
        with children_lock:
            for slot, child in children.items():
                children[slot] = _replace_if_dead(child, context, live.config, shared, slot)
    for child, _sending in children.values():
        if child.is_alive():
            child.terminate()  # SIGTERM: the child drains its associations
    receiver.stop()
    monitor.stop()
    statistics.stop()
    for worker in reversed(background):
        worker.stop()
    http.stop()
    for child, _sending in children.values():
        child.join(timeout=_DRAIN_SECONDS + 5)
    engine.dispose()
    record(messages.application_activity(False, getpass.getuser()))
    close_trail()
    lock.release()
    log.info("stopped")
