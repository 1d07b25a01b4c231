"""The console's configuration page API: the configuration as the node runs it (secrets masked)
and the files it came from, a reload (the same as SIGHUP: checked first, refused whole with
`check-config`'s message), and the peers, each with a C-ECHO that answers with the peer's status
and the round-trip time."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from ..config import ConfigError
from ..config.live import LIVE_KEYS, ReloadOutcome
from ..config.secrets import masked
from ..dimse.scu import PeerUnavailable, echo
from .context import ConsoleContext

log = logging.getLogger(__name__)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _outcome(outcome: ReloadOutcome | None) -> dict[str, object] | None:
    if outcome is None:
        return None
    return {
        "applied": outcome.applied,
        "message": outcome.message,
        "changed": outcome.changed,
        "needs_restart": outcome.needs_restart,
        "at": _when(outcome.at),
    }


def router(context: ConsoleContext) -> APIRouter:
    """The routes under the console's API (its access check and cross-site guard apply)."""
    routes = APIRouter()

    @routes.get("/config")
    def configuration() -> dict[str, object]:
        live = context.live
        files = live.files if live is not None else []
        return {
            "files": [
                {"path": str(path.resolve()), "modified": _when(path.stat().st_mtime)}
                for path in files
                if path.is_file()
            ],
            "started_at": _when(live.started_at) if live is not None else None,
            "reloadable": live is not None,
            "live_keys": list(LIVE_KEYS),
            "last_reload": _outcome(live.last if live is not None else None),
            "configuration": masked(context.config.model_dump(mode="json")),
        }

    @routes.post("/config/reload")
    def reload() -> dict[str, object] | None:
        """Read and check the files again and apply them as SIGHUP does; 422 with the reason
        when they are refused (the running configuration stays)."""
        if context.live is None:
            raise HTTPException(503, "this node was started without configuration files")
        log.info("console: configuration reload asked")
        outcome = context.live.reload()
        if not outcome.applied:
            raise HTTPException(422, outcome.message)
        return _outcome(outcome)

    @routes.get("/peers")
    def peers() -> list[dict[str, object]]:
        config = context.config
        research = {d for rule in config.inference.routes for d in rule.research_destinations}
        return [
            {
                "name": name,
                "ae_title": peer.ae_title,
                "host": peer.host,
                "port": peer.port,
                "tls": peer.tls,
                "dicomweb_url": str(peer.dicomweb_url) if peer.dicomweb_url else None,
                "result_destination": name in config.results.destinations,
                "research_destination": name in research,
                "can_echo": peer.address is not None,
            }
            for name, peer in config.peers.items()
        ]

    @routes.post("/peers/{name}/echo")
    def echo_peer(name: str) -> dict[str, object]:
        """C-ECHO the peer as `dicom-node echo` does; the time covers the whole exchange
        (association, C-ECHO, release), which is what a sender waits for."""
        config = context.config
        if name not in config.peers:
            raise HTTPException(404, f"no peer {name!r} in the configuration")
        started = time.perf_counter()
        try:
            status = echo(config, name)
        except (PeerUnavailable, ConfigError) as error:
            log.warning("console: C-ECHO to %s failed: %s", name, error)
            return {"peer": name, "ok": False, "message": str(error)}
        milliseconds = round((time.perf_counter() - started) * 1000, 1)
        answer = "success" if status == 0 else "failure"
        return {
            "peer": name,
            "ok": status == 0,
            "status": f"0x{status:04X}",
            "message": f"{answer} (status 0x{status:04X}) in {milliseconds} ms",
            "round_trip_ms": milliseconds,
        }

    return routes
