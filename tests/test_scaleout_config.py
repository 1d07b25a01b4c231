"""Scale-out settings: `jobs.engine`, `jobs.broker_url` and `inference.device`, checked at start
with the key at fault named; the choice of the models' device as PyTorch sees this host (a
GPU host is played on the CPU by answering for torch.cuda); the queue a route sends jobs to."""

from __future__ import annotations

import pydicom
import pytest
import torch
import yaml

from dicom_node.config import ConfigError, DuplicatePolicy, JobEngine, parse_config
from dicom_node.index.database import open_engine
from dicom_node.index.writer import IndexWriter
from dicom_node.jobs.bundles import load_bundles, model_device
from dicom_node.jobs.celery_app import JOBS_QUEUE
from dicom_node.jobs.publisher import job_queue
from dicom_node.store.ingest import Ingest
from dicom_node.store.storage import StorageArea
from inference.device import DeviceUnavailable, choose_device

from .conftest import CR_CHEST
from .test_cli import dicom_node

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/dicom_node"
AMQP = "amqp://guest:secret@127.0.0.1:5672/celery-engine"


def test_the_default_is_the_embedded_node_on_the_best_device():
    config = parse_config({})
    assert config.jobs.engine == JobEngine.LOCAL
    assert config.jobs.broker_url is None
    assert config.inference.device == "auto"
    assert all(rule.queue is None for rule in config.inference.routes)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"jobs": {"engine": "celery", "broker_url": AMQP}}, "storage.database: the celery"),
        (
            {
                "jobs": {"engine": "celery", "broker_url": AMQP},
                "storage": {"database": "sqlite:////tmp/index.sqlite"},
            },
            "needs a PostgreSQL index shared by every host",
        ),
        ({"jobs": {"engine": "celery"}, "storage": {"database": POSTGRES}}, "jobs.broker_url"),
        ({"jobs": {"engine": "spark"}}, "jobs.engine: Input should be 'local' or 'celery'"),
        ({"inference": {"device": "gpu"}}, "inference.device: String should match pattern"),
        ({"inference": {"device": "cuda:x"}}, "inference.device"),
    ],
)
def test_a_bad_scale_out_setting_names_its_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(settings)


def test_celery_on_postgresql_is_valid():
    config = parse_config(
        {"jobs": {"engine": "celery", "broker_url": AMQP}, "storage": {"database": POSTGRES}}
    )
    assert config.jobs.engine == JobEngine.CELERY


def test_check_config_refuses_celery_without_postgresql(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"jobs": {"engine": "celery", "broker_url": AMQP}}))
    result = dicom_node("check-config", str(path))
    assert result.returncode == 3
    assert "storage.database: the celery engine needs a PostgreSQL index" in result.stderr


def test_check_config_says_where_jobs_run_without_the_broker_password(tmp_path):
    path = tmp_path / "node.yaml"
    settings = {
        "jobs": {"engine": "celery", "broker_url": AMQP},
        "storage": {"database": POSTGRES, "path": str(tmp_path / "storage")},
    }
    path.write_text(yaml.safe_dump(settings))
    result = dicom_node("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "jobs: celery workers, broker amqp://guest:********@127.0.0.1:5672/celery-engine" in (
        result.stdout
    )
    assert "secret" not in result.stdout


@pytest.fixture
def gpus(monkeypatch):
    """Make torch.cuda see ``n`` GPUs."""

    def see(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return see


def test_auto_is_the_cpu_where_torch_sees_no_gpu(gpus):
    gpus(0)
    assert choose_device("auto") == "cpu"
    assert choose_device("cpu") == "cpu"


def test_auto_is_the_first_gpu_where_there_is_one(gpus):
    gpus(2)
    assert choose_device("auto") == "cuda:0"
    assert choose_device("cuda") == "cuda:0"
    assert choose_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("count, requested", [(0, "cuda"), (0, "cuda:0"), (1, "cuda:1")])
def test_a_gpu_this_host_lacks_is_refused_with_what_torch_sees(gpus, count, requested):
    gpus(count)
    with pytest.raises(DeviceUnavailable, match=f"{requested} is not available.*sees"):
        choose_device(requested)


def test_a_missing_gpu_is_a_configuration_error_naming_the_key(gpus):
    gpus(0)
    inference = parse_config({"inference": {"device": "cuda"}}).inference
    with pytest.raises(ConfigError, match=r"^inference\.device: cuda is not available"):
        model_device(inference)


def test_the_models_run_on_the_chosen_device(gpus):
    gpus(0)
    inference = parse_config({}).inference
    bundles = load_bundles(inference, device=model_device(inference))
    assert {bundle.device for bundle in bundles.values()} == {"auto"}  # PyTorch not needed yet
    network = bundles["cxr_pneumonia"].network
    assert {parameter.device.type for parameter in network.parameters()} == {"cpu"}
    assert bundles["cxr_pneumonia"].device == "cpu"  # settled as the network loaded


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this host")
def test_the_models_run_on_the_gpu_where_there_is_one():
    inference = parse_config({"inference": {"device": "cuda"}}).inference
    bundles = load_bundles(inference, device=model_device(inference))
    network = bundles["cxr_pneumonia"].network
    assert {parameter.device.type for parameter in network.parameters()} == {"cuda"}


def stored_study(tmp_path, source) -> tuple:
    """An index and storage area holding the file ``source``, as a receiver stores it."""
    engine = open_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    storage = StorageArea(tmp_path / "storage")
    storage.prepare()
    writer = IndexWriter(engine, DuplicatePolicy.KEEP_FIRST)
    data = source.read_bytes()
    meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
    raw = data[144 + meta.FileMetaInformationGroupLength :]
    try:
        attributes = Ingest(storage, writer, DuplicatePolicy.KEEP_FIRST, 1 << 28).store(
            raw,
            meta.TransferSyntaxUID,
            meta.MediaStorageSOPClassUID,
            meta.MediaStorageSOPInstanceUID,
            "MODALITY",
        )
    finally:
        writer.close()
    return engine, storage, attributes.study_instance_uid


@pytest.mark.parametrize(
    "modality, queue", [(["CR", "DX"], "gpu"), (["CT"], JOBS_QUEUE)], ids=["routed", "not"]
)
def test_a_route_naming_a_queue_sends_the_jobs_of_its_studies_there(tmp_path, modality, queue):
    engine, storage, study_uid = stored_study(tmp_path, CR_CHEST)
    routes = [{"name": "on-gpu", "models": ["cxr_pneumonia"], "modality": modality, "queue": "gpu"}]
    config = parse_config({"inference": {"routes": routes}})
    assert job_queue(config, engine, storage, study_uid) == queue
