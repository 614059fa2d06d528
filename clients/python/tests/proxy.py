"""A TCP proxy for the tests that can cut every live connection through it, as a network would."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class Proxy:
    """Forwards 127.0.0.1:<port> to an upstream address; `cut()` closes the live connections."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._live: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.cuts = 0
        self.requests: list[str] = []
        """The head of each request sent through it (its request line and headers)."""
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._live.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool = False) -> None:
        try:
            while data := source.recv(65536):
                if requests and data[:4] in (b"GET ", b"POST", b"DELE"):
                    with self._lock:
                        self.requests.append(data.split(b"\r\n\r\n")[0].decode(errors="replace"))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def streams(self) -> list[str]:
        """The `Last-Event-ID` of each request for the event stream sent through it."""
        ids = []
        for head in self.requests:
            if head.startswith("GET /api/v1/stream"):
                for line in head.split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "last-event-id":
                        ids.append(value.strip())
        return ids

    def cut(self) -> int:
        """Cuts every live connection (a reset, not a clean close); returns how many."""
        with self._lock:
            live, self._live = self._live, []
        for client, upstream in live:
            for s in (client, upstream):
                try:
                    # Linger 0: the close resets the connection, as a dropped network does.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked in recv
                except OSError:
                    pass
                s.close()
        self.cuts += len(live)
        return len(live)

    def close(self) -> None:
        self._server.close()
        self.cut()
