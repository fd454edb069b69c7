"""Loopback targets the escape attempts aim at, and proof that none was reached.

The test opens real listening sockets (TCP on 127.0.0.1 and ::1, UDP on
127.0.0.1, a unix socket path in tmp, an abstract unix name) before the
confined programs run; after every run `hits()` polls each one without
blocking, so any connection or datagram that got through is reported.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Listeners:
    directory: Path
    sockets: dict[str, socket.socket] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)

    def open(self) -> Listeners:
        self._tcp("tcp4", socket.AF_INET, "127.0.0.1")
        self._tcp("tcp6", socket.AF_INET6, "::1")
        self._udp()
        self._unix_path()
        self._unix_abstract()
        return self

    def _add(self, name: str, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sockets[name] = sock

    def _tcp(self, name: str, family: socket.AddressFamily, address: str) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, 0))
        sock.listen(8)
        self._add(name, sock)
        self.values[f"{name}_port"] = sock.getsockname()[1]

    def _udp(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self._add("udp4", sock)
        self.values["udp4_port"] = sock.getsockname()[1]

    def _unix_path(self) -> None:
        path = self.directory / "listen.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, 0o777)  # so only the sandbox, not file permissions, stands in the way
        sock.listen(8)
        self._add("unix_path", sock)
        self.values["unix_path"] = str(path)

    def _unix_abstract(self) -> None:
        name = f"bastion-escape-{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + name)
        sock.listen(8)
        self._add("unix_abstract", sock)
        self.values["abstract_name"] = name

    def hits(self) -> list[str]:
        """Every listener that received a connection or datagram since the last call."""
        found = []
        for name, sock in self.sockets.items():
            try:
                if sock.type == socket.SOCK_DGRAM:
                    data = sock.recv(65536)
                    found.append(f"{name}: datagram {data[:32]!r}")
                else:
                    conn, peer = sock.accept()
                    conn.close()
                    found.append(f"{name}: connection from {peer!r}")
            except (BlockingIOError, InterruptedError):
                continue
        return found

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
