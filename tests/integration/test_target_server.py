"""The test target server takes many connections at once, as real servers do."""

from __future__ import annotations

import socket

from healthmon.targets import TargetServer

CLIENTS = 64


def test_connections_queue_while_the_server_is_busy() -> None:
    # Not started: nothing accepts, as when its one accepting thread is busy. Every
    # connect must still complete from the listen queue at once: with socketserver's
    # backlog of 5, the seventh SYN was dropped and its client retried a second later
    # (a cluster node's first checks of ten services taken over came 1 s late).
    server = TargetServer()
    sockets: list[socket.socket] = []
    try:
        for number in range(CLIENTS):
            client = socket.socket()
            sockets.append(client)
            client.settimeout(0.5)  # under TCP's 1 s SYN retransmission timeout
            try:
                client.connect(("127.0.0.1", server.port))
            except TimeoutError:
                raise AssertionError(
                    f"connection {number + 1} of {CLIENTS} to the target server was not "
                    "queued (its listen backlog is too short)"
                ) from None
    finally:
        for client in sockets:
            client.close()
        server.stop()
