"""Checking that a loopback port is free before a server is started on it."""

from __future__ import annotations

import socket


def bindable_port(host: str, port: int) -> int:
    """`port` if it can be bound on `host` (0: a free one); OSError naming the port otherwise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the servers themselves: a port held only by closed connections (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot bind {host}:{port}: the port is not free ({err.strerror})") from None
        return probe.getsockname()[1]
