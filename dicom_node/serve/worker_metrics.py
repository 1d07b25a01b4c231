"""A worker's Prometheus metrics (`dicom-node worker --metrics-port N`): the models run by its
pool processes, by model and device, which the receivers' `/metrics` cannot see in a cluster.

The pool processes write their values into a folder of this worker's own (prometheus_client's
multiprocess mode, set before the library is first imported); the worker's main process serves
their sum on ``http://HOST:N/metrics``."""

from __future__ import annotations

from .metrics_folder import use_temporary_metrics_folder


def prepare_worker_metrics() -> None:
    """A fresh folder for this worker's processes' values; call before importing
    prometheus_client."""
    use_temporary_metrics_folder("dicom-node-worker-")


def serve_worker_metrics(port: int) -> None:
    """Serve the summed values of the worker's processes on ``port`` (all interfaces), in a
    thread of this process."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
