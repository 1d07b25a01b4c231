"""`dicom-node worker`: a Celery worker of the celery engine, on this host or another.

It takes study jobs (de-identify, models, encode, store) from its queues (default: ``jobs`` and
``outbox``; a GPU host may take only ``gpu``, the queue routes name) and delivers what the
outbox holds. It reads and writes the storage area through the same path as the receivers (a
shared file system) and holds the area's lock shared, so an embedded node cannot start on it
meanwhile. Celery's prefork pool runs ``jobs.workers`` processes; each opens the index and loads
the models on ``inference.device`` with its first job. SIGTERM lets the jobs in progress end.

SIGHUP reloads the configuration as it does for `serve` (`config.live`, the checks of
`check-config`; a file that fails them is refused and logged): the main process takes the live
settings (routes, destinations, peers) and restarts Celery's pool, whose processes each end
after the job they run and are forked again from the main process, with the new settings. Each
job thus runs wholly on one configuration, and none is dropped. (Celery's own SIGHUP handler
would re-execute the worker, unchecked, with a bad file ending it.)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from celery.signals import worker_process_init, worker_ready

from ..audit import open_trail
from ..config import ConfigError, JobEngine, NodeConfig
from ..config.live import LiveConfiguration, reload_on_sighup
from ..jobs.bundles import load_bundles, model_device
from ..jobs.celery_app import JOBS_QUEUE, OUTBOX_QUEUE, celery_app
from ..jobs.celery_tasks import register_tasks
from ..jobs.runner import collect_garbage_for_jobs
from ..store.lock import StorageLock, StorageLocked
from .config_check import checked_config
from .worker_metrics import serve_worker_metrics

log = logging.getLogger(__name__)

DEFAULT_QUEUES = (JOBS_QUEUE, OUTBOX_QUEUE)


def _reload_in_background(live: LiveConfiguration) -> None:
    """Reload `live` on each SIGHUP, in a thread of its own (Celery's loop holds the main one)."""
    requested = reload_on_sighup()

    def reload_when_asked() -> None:
        while True:
            requested.wait()
            requested.clear()
            live.reload()

    threading.Thread(target=reload_when_asked, name="configuration reload", daemon=True).start()


def run_worker(
    config: NodeConfig,
    queues: Sequence[str],
    concurrency: int | None,
    metrics_port: int | None = None,
    config_path: Path | None = None,
) -> None:
    """Run a Celery worker on ``queues`` until SIGTERM; configuration errors before it starts.
    With ``metrics_port``, its metrics are served there (`worker_metrics`); with
    ``config_path`` (the file `config` was read from), SIGHUP reloads it."""
    if config.jobs.engine != JobEngine.CELERY:
        raise ConfigError("jobs.engine: a worker needs the celery engine (jobs.engine: celery)")
    # asks NVML, not the CUDA runtime, so that the pool processes forked later can use CUDA
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    device = model_device(config.inference)  # a GPU this host lacks stops the worker here
    load_bundles(config.inference, device=device)
    try:
        lock = StorageLock(config.storage.path, shared=True)
    except StorageLocked as error:
        raise ConfigError(str(error)) from None

    @worker_process_init.connect(weak=False)
    def _prepare_process(**_: object) -> None:
        # Celery marks its pool processes daemonic, which multiprocessing forbids to start
        # processes; the CT loader decodes slices in a pool of its own, joined before it returns.
        multiprocessing.current_process().daemon = False
        collect_garbage_for_jobs()
        open_trail(config.audit, config.audit_file, config.ae_title)

    if metrics_port is not None:
        try:
            serve_worker_metrics(metrics_port)
        except OSError as error:
            raise ConfigError(f"--metrics-port {metrics_port}: {error.strerror}") from None
    app = celery_app(config)
    app.conf.worker_pool_restarts = True  # a reload replaces the pool processes
    state = register_tasks(app, config)
    if config_path is not None:
        live = LiveConfiguration(config_path, config, checked_config)

        @worker_ready.connect(weak=False)
        def _take_over_sighup(sender, **_: object) -> None:
            # after Celery installed its own handler, in the main process's main thread
            live.subscribe(state.reconfigure)
            live.subscribe(lambda _new: sender.controller.pool.restart())
            _reload_in_background(live)

    log.info(
        "worker on queues %s, %d process(es), models on %s",
        ", ".join(queues),
        concurrency or config.jobs.workers,
        device,
    )
    try:
        app.worker_main(
            [
                "worker",
                f"--queues={','.join(queues)}",
                f"--concurrency={concurrency or config.jobs.workers}",
                f"--hostname=dicom-node-{os.getpid()}@{socket.gethostname()}",
                f"--loglevel={config.logging.level}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        lock.release()
