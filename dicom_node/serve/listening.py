"""The node's listening ports, bound when it starts: a port it cannot have stops the node,
named by its configuration key, rather than leaving it running without that listener."""

from __future__ import annotations

import socket

from ..config import ConfigError


def listen(host: str, port: int, key: str, backlog: int) -> socket.socket:
    """A listening socket on `host` (an IPv6 address when it holds a colon) and `port`;
    ConfigError naming `key` (e.g. ``http.port``) when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as error:
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {error.strerror}") from None
