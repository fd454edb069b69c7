"""TCP connect to the test's listener on 127.0.0.1."""

import socket


def connect() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", PARAMS["tcp4_port"]))
        return "connected"


attempt(connect, "connect to 127.0.0.1")
