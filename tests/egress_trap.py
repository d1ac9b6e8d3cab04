"""A test double for the internet: an HTTP proxy that forwards nothing, for clients that must stay offline."""

from __future__ import annotations

import socketserver


class EgressTrap(socketserver.ThreadingTCPServer):
    """An HTTP proxy that forwards nothing: it records each request line it is sent and answers 403.

    A client's proxy variables point here with only the gateway exempt, so any phone-home is caught
    (and refused on this machine, not sent on).
    """

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[str] = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(inner) -> None:
                line = inner.rfile.readline(4096).decode(errors="replace").strip()
                self.requests.append(line)
                inner.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"
