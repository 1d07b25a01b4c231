"""Hosts of their own for the cluster tests: Linux network namespaces (iproute2 `ip netns`), each
joined to this machine by a veth pair with its own /30, so that every receiver and worker has its
own address, as on separate machines. The services that listen on this machine's loopback only
(PostgreSQL, RabbitMQ) are reached from the namespaces through TCP forwarders on each pair's
address here. Needs root (CAP_NET_ADMIN); `available` says why not otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> str:
    """Why namespaces cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as error:
        return f"`ip netns add` fails here: {getattr(error, 'stderr', error)}"
    _ip("netns", "del", name)
    return ""


@dataclass(frozen=True)
class Host:
    """A namespace: its name, its address, and this machine's address on its link."""

    namespace: str
    address: str
    gateway: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def reaching(self, where: str) -> str:
        """A URL or host name of this machine's loopback, as this host reaches it."""
        return where.replace("127.0.0.1", self.gateway)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:  # either side gone (a process killed): both connections end, as without us
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Forwarder:
    """Accepts on (address, port) here and connects each client to 127.0.0.1:port."""

    def __init__(self, address: str, port: int) -> None:
        self.port = port
        self.server = socket.create_server((address, port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port))
            except OSError:  # the service is down: this client is refused, as without us
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.server.close()


class Hosts:
    """Namespaces made for one test, removed after it."""

    def __init__(self, forwarded_ports: list[int]) -> None:
        self._tag = uuid.uuid4().hex[:6]
        self._ports = forwarded_ports
        self._subnet = 16 + int(self._tag[:2], 16) % 200
        self.hosts: list[Host] = []
        self._forwarders: list[_Forwarder] = []

    def add(self) -> Host:
        number = len(self.hosts)
        namespace = f"dn-{self._tag}-{number}"
        outside, inside = f"dn{self._tag}{number}o", f"dn{self._tag}{number}i"
        base = f"10.{self._subnet}.{number}"
        host = Host(namespace, f"{base}.2", f"{base}.1")
        _ip("netns", "add", namespace)
        self.hosts.append(host)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("addr", "add", f"{host.gateway}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        for command in (
            ("addr", "add", f"{host.address}/30", "dev", inside),
            ("link", "set", inside, "up"),
            ("link", "set", "lo", "up"),
            ("route", "add", "default", "via", host.gateway),
        ):
            _ip("netns", "exec", namespace, "ip", *command)
        self._forwarders += [_Forwarder(host.gateway, port) for port in self._ports]
        return host

    def remove(self) -> None:
        for forwarder in self._forwarders:
            forwarder.close()
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=30)
