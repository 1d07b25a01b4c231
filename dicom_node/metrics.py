"""Prometheus metrics shared by the receiving processes and exposed at `GET /metrics`.

`serve` sets PROMETHEUS_MULTIPROC_DIR before this module is imported, and the HTTP endpoint
aggregates the values of every process: the receiving processes and the job workers (whose
model runs are counted here).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

INSTANCES_RECEIVED = Counter(
    "dicom_node_instances_received", "Instances stored after a C-STORE (duplicates excluded)"
)
BYTES_RECEIVED = Counter("dicom_node_bytes_received", "Bytes of instances stored")
STORE_LATENCY = Histogram(
    "dicom_node_store_latency_seconds",
    "Time from a complete C-STORE request to its durable, indexed answer",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
OPEN_ASSOCIATIONS = Gauge(
    "dicom_node_open_associations", "Associations currently open", multiprocess_mode="livesum"
)
FAILURES = Counter("dicom_node_failures", "Requests answered with a failure, by reason", ["reason"])
DUPLICATES = Counter("dicom_node_duplicates", "Instances received again, by policy", ["policy"])
HEALTHY = Gauge(
    "dicom_node_healthy",
    "1 when the last health check passed, else 0, by check (index and storage: a write "
    "succeeded; dicom: the listener runs)",
    ["check"],
    multiprocess_mode="mostrecent",
)
INDEX_BATCH = Histogram(
    "dicom_node_index_commit_batch_size",
    "Instances committed together by one index transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_SECONDS = Histogram(
    "dicom_node_model_run_seconds",
    "Time a model took on one series (inference and encoding of its results), by model and by "
    "the device it ran on (cpu, cuda:N)",
    ["model", "device"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0),
)


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type, aggregated over processes when needed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
