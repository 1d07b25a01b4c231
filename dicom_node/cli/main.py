"""The `dicom-node` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from ..config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    JobEngine,
    NodeConfig,
    PeerConfig,
    config_files,
    config_source,
    load_config,
)
from ..config.secrets import masked
from ..deid.settings import DeidentificationOptions
from ..index.ids import MAX_ROW_ID


def _row_id(text: str) -> int:
    """A job or outbox id as typed: a number the index's ids can be."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"ids run from 1 to {MAX_ROW_ID}: {text}")
    return value


def _config(args: argparse.Namespace) -> NodeConfig:
    return load_config(args.config)


def _serve(args: argparse.Namespace) -> int:
    from ..logging_setup import configure_logging
    from ..serve.node import serve

    config = _config(args)
    configure_logging(config.logging.level)
    serve(config, config_files(args.config))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from ..logging_setup import configure_logging
    from ..serve.worker_metrics import prepare_worker_metrics

    config = _config(args)
    configure_logging(config.logging.level)
    if args.metrics_port is not None:
        prepare_worker_metrics()  # before prometheus_client is imported
    from ..serve.worker import DEFAULT_QUEUES, run_worker

    queues = [q for item in args.queues or DEFAULT_QUEUES for q in item.split(",") if q]
    run_worker(config, queues, args.concurrency, args.metrics_port, config_files(args.config)[0])
    return 0


def _peer_address(peer: PeerConfig) -> str:
    parts = [f"{a.ae_title}@{a.host}:{a.port}"] if (a := peer.address) else []
    parts += [f"STOW-RS {peer.dicomweb_url}"] if peer.dicomweb_url else []
    return ", ".join(parts)


def _describe_jobs(config: NodeConfig) -> str:
    """Where jobs run and on which device the models run (a GPU asked for is checked as this
    host sees it: a GPU worker's configuration checked on a receiver's host says so, it is not
    an error here)."""
    from ..jobs.bundles import model_device

    jobs = config.jobs
    where = f"local pool of {jobs.workers} worker(s)"
    if jobs.engine == JobEngine.CELERY:
        broker = masked(jobs.broker_url or "")
        where = f"celery workers, broker {broker}"
    try:
        device = model_device(config.inference)
    except ConfigError as error:
        device = f"{config.inference.device}, not on this host ({error})"
    return f"jobs: {where}; models on {device}"


def _check_config(args: argparse.Namespace) -> int:
    from ..serve.config_check import check_configuration

    checked = check_configuration(args.path)
    config = checked.config
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    peers = ", ".join(f"{name} ({_peer_address(p)})" for name, p in config.peers.items()) or "none"
    print(f"{config_source(args.path)}: valid")
    print(
        f"  AE title {config.ae_title}, DICOM {config.dicom.host} port {config.dicom.port or 'off'}"
        f", TLS port {config.dicom.tls.port or 'off'}, HTTP {config.http.host}:{config.http.port}"
    )
    print(f"  storage {config.storage.path}, index {masked(config.storage.database_url)}")
    print(f"  peers: {peers}")
    fhir = config.fhir
    if fhir.enabled:
        print(f"  FHIR: {fhir.base_url} ({fhir.version.value}, auth {fhir.auth.method.value})")
    else:
        print("  FHIR: off")
    print(f"  {checked.http}")
    bundles = checked.bundles.values()
    print("  models: " + ", ".join(f"{b.name} {b.version} ({b.task})" for b in bundles))
    print(f"  {_describe_jobs(config)}")
    print(f"  routes: {', '.join(rule.name for rule in config.inference.routes)}")
    return 0


def _echo(args: argparse.Namespace) -> int:
    from ..dimse.scu import PeerUnavailable, echo

    try:
        status = echo(_config(args), args.peer)
    except PeerUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if status != 0:
        print(
            f"error: peer {args.peer!r} answered C-ECHO with status 0x{status:04X}", file=sys.stderr
        )
        return 1
    print(f"C-ECHO to {args.peer}: success")
    return 0


def _send(args: argparse.Namespace) -> int:
    from ..dimse.scu import PeerUnavailable, send

    try:
        report = send(_config(args), args.peer, [Path(p) for p in args.paths])
    except PeerUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, reason in report.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(
        f"sent {report.sent} instance(s) to {args.peer}, {len(report.failed)} failed, "
        f"{len(report.skipped)} skipped (not DICOM)"
    )
    return 0 if not report.failed else 1


def _infer(args: argparse.Namespace) -> int:
    from .infer import infer

    return infer(_config(args).inference, [Path(p) for p in args.paths], args.model, args.json)


_OPTION_FLAGS = (
    "dates",
    "patient_characteristics",
    "device_identity",
    "institution_identity",
    "clean_descriptors",
    "safe_private",
)


def _deidentification_options(
    config: NodeConfig, args: argparse.Namespace
) -> DeidentificationOptions:
    """A route's options (``--route``), with the options given on the command line on top."""
    options = DeidentificationOptions()
    if args.route:
        named = [r for r in config.inference.routes if r.name == args.route]
        if not named:
            known = ", ".join(r.name for r in config.inference.routes)
            raise ConfigError(f"no route named {args.route!r} (routes: {known})")
        options = named[0].deidentification
    given = {flag: getattr(args, flag) for flag in _OPTION_FLAGS if hasattr(args, flag)}
    try:
        return DeidentificationOptions.model_validate({**options.model_dump(), **given})
    except ValidationError as error:
        problems = "; ".join(item["msg"] for item in error.errors())
        raise ConfigError(f"de-identification options: {problems}") from None


def _anonymize(args: argparse.Namespace) -> int:
    from ..deid.deidentify import Deidentifier
    from ..deid.files import anonymize_paths
    from ..deid.pseudonyms import Pseudonymizer, load_or_create_key
    from ..index.database import open_engine
    from ..index.pseudonyms import PseudonymTable

    config = _config(args)
    if not args.source.exists():
        print(f"error: no such file or folder: {args.source}", file=sys.stderr)
        return 1
    options = _deidentification_options(config, args)
    key = load_or_create_key(config.pseudonym_key_file)
    store = PseudonymTable(open_engine(config.storage.database_url))
    deidentifier = Deidentifier(Pseudonymizer(key), options)
    report = anonymize_paths(deidentifier, store, args.source, args.target)
    for path, reason in report.skipped:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    print(
        f"de-identified {report.written} file(s) into {args.target}, {len(report.skipped)} skipped"
    )
    return 0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _jobs(args: argparse.Namespace) -> int:
    from ..index import jobs, progress
    from ..index.database import open_engine

    engine = open_engine(_config(args).storage.database_url)
    if args.action == "retry":
        if not args.id or not jobs.retry(engine, args.id):
            print(f"error: no finished or failed job {args.id}", file=sys.stderr)
            return 1
        print(f"job {args.id} is pending again")
        return 0
    if args.action == "show":
        found = jobs.get(engine, args.id) if args.id else None
        if found is None:
            print(f"error: no job {args.id}", file=sys.stderr)
            return 1
        listed = [found]
    else:
        listed = jobs.recent(engine, args.limit)
    in_progress = {job.id: job for job in progress.running(engine)}
    for job in listed:
        print(
            f"{job.id:>6}  {job.state:<8} attempts={job.attempts}  updated {_when(job.updated_at)}"
            f"  study {job.study_instance_uid}"
            + (f"\n        error: {job.error}" if job.error else "")
        )
        if job.id in in_progress:
            running = in_progress[job.id]
            print(f"        {running.percent:>3}%  {running.step}")
        if args.action == "show":
            for note in jobs.notes(engine, job.id):
                print(f"        {note}")
    return 0


def _outbox(args: argparse.Namespace) -> int:
    from ..index.database import open_engine
    from ..outbox.queue import open_outbox

    config = _config(args)
    box = open_outbox(config, open_engine(config.storage.database_url))
    if args.action == "retry":
        count = box.retry(args.ids or None)
        print(f"{count} object(s) not yet delivered: due now")
        return 0
    for row in box.rows(args.state, args.limit):
        line = f"{row.id:>6}  {row.state:<7} {row.destination:<16} attempts={row.attempts}"
        if row.state == "pending" and row.attempts:
            line += f"  next try {_when(row.next_attempt_at)}"
        print(line + (f"  last error: {row.last_error}" if row.last_error else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"configuration file (default {DEFAULT_CONFIG_PATH})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the node")
    serve.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)
    worker = commands.add_parser(
        "worker", help="run a Celery worker for jobs and deliveries (jobs.engine: celery)"
    )
    worker.add_argument(
        "--queues",
        action="append",
        help="queues to take work from, comma-separated or repeated (default: jobs,outbox; "
        "e.g. gpu for the routes that name it)",
    )
    worker.add_argument("--concurrency", type=int, help="job processes (default: jobs.workers)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's Prometheus metrics (where each model ran) on this port",
    )
    worker.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    worker.set_defaults(run=_worker)
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", type=Path, nargs="?", default=DEFAULT_CONFIG_PATH)
    check.set_defaults(run=_check_config)
    echo = commands.add_parser("echo", help="C-ECHO a configured peer")
    echo.add_argument("peer", help="peer name (key under `peers`) or AE title")
    echo.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    echo.set_defaults(run=_echo)
    send = commands.add_parser("send", help="C-STORE files or folders to a configured peer")
    send.add_argument("peer", help="peer name (key under `peers`) or AE title")
    send.add_argument("paths", nargs="+", help="DICOM files or folders")
    send.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    send.set_defaults(run=_send)
    anonymize = commands.add_parser(
        "anonymize", help="de-identify DICOM files or folders (PS3.15 Basic Profile)"
    )
    anonymize.add_argument("source", type=Path, help="DICOM file or folder")
    anonymize.add_argument("target", type=Path, help="output file or folder")
    anonymize.add_argument(
        "--profile",
        choices=["basic"],
        default="basic",
        help="PS3.15 Basic Application Level Confidentiality Profile, with the options below",
    )
    anonymize.add_argument("--route", help="use the de-identification options of this route")
    anonymize.add_argument(
        "--dates",
        choices=["remove", "full", "shifted"],
        default=argparse.SUPPRESS,
        help="Retain Longitudinal Temporal Information: full dates, or shifted per patient",
    )
    for flag, option in (
        ("--patient-characteristics", "Retain Patient Characteristics (age, sex, size, weight)"),
        ("--device-identity", "Retain Device Identity"),
        ("--institution-identity", "Retain Institution Identity"),
        ("--clean-descriptors", "Clean Descriptors: keep descriptions, scrubbed of identifiers"),
    ):
        anonymize.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=option)
    anonymize.add_argument(
        "--safe-private",
        action="append",
        metavar="GGGG,CREATOR,EE",
        default=argparse.SUPPRESS,
        help="Retain Safe Private: keep this private attribute (repeatable)",
    )
    anonymize.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    anonymize.set_defaults(run=_anonymize)
    jobs = commands.add_parser("jobs", help="list jobs, show what one did, retry one")
    jobs.add_argument("action", nargs="?", choices=["list", "show", "retry"], default="list")
    jobs.add_argument("id", nargs="?", type=_row_id, help="job id (show, retry)")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    jobs.set_defaults(run=_jobs)
    outbox = commands.add_parser("outbox", help="objects waiting for or sent to peers; retry")
    outbox.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    outbox.add_argument("ids", nargs="*", type=_row_id, help="outbox ids to retry (default: all)")
    outbox.add_argument("--state", choices=["pending", "sent", "failed"])
    outbox.add_argument("--limit", type=int, default=100)
    outbox.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    outbox.set_defaults(run=_outbox)
    infer = commands.add_parser(
        "infer", help="run the models on DICOM files, series folders or PNG/JPEG images"
    )
    infer.add_argument(
        "paths", nargs="+", help="DICOM files, folders (one series each), PNG/JPEG images"
    )
    infer.add_argument("--model", help="run this bundle instead of the routing rules' choice")
    infer.add_argument("--json", action="store_true", help="one JSON object per result per line")
    infer.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    infer.set_defaults(run=_infer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
