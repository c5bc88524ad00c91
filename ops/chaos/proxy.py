"""A TCP proxy between the fleet and Redis that a scenario can cut, heal or make lossy.

Cut: every connection through it is reset and new ones are refused, as a partition looks
to a client whose packets get no answer but a reset. Lossy: each chunk forwarded may be
held back for a while first, as lost packets are by TCP's retransmissions (the kernel
here may lack `tc netem`).
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Proxy:
    target_port: int
    port: int = 0
    cut: bool = False
    loss: float = 0.0
    stall_s: float = 0.2
    _server: socket.socket | None = None
    _pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: threading.Event = field(default_factory=threading.Event)
    _rng: random.Random = field(default_factory=lambda: random.Random(5))

    def start(self) -> Proxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(256)
        self._server, self.port = server, server.getsockname()[1]
        threading.Thread(target=self._accept, name="chaos-proxy", daemon=True).start()
        return self

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def partition(self) -> None:
        """Cut the link: reset every connection, refuse new ones until `heal`."""
        self.cut = True
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    # Linger 0: close sends a reset, not a polite FIN.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                except OSError:
                    pass

    def heal(self) -> None:
        self.cut = False
        self.loss = 0.0

    def close(self) -> None:
        self._closed.set()
        self.partition()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._closed.is_set():
                for key, _ in selector.select(timeout=0.5):
                    source, sink = key.fileobj, key.data
                    data = source.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    if self.loss and self._rng.random() < self.loss:
                        time.sleep(self.stall_s)  # a lost packet, retransmitted later
                    sink.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._pairs = [p for p in self._pairs if p != (a, b)]
