"""A throwaway PostgreSQL server on a free port, for tests, benchmarks and local replicas.

Debian's server binaries run under pytest-postgresql's executor (a dev dependency, imported
by the callers that start a server); as root, pg_ctl runs as the `postgres` user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.process import free_port

if TYPE_CHECKING:
    from pytest_postgresql.executor import PostgreSQLExecutor

STARTUP_TIMEOUT_S = 30.0


def _pg_ctl() -> str:
    """Debian's pg_ctl of the newest installed PostgreSQL, else pg_ctl next to pg_config."""

    def major_version(pg_ctl: str) -> int:
        name = Path(pg_ctl).parent.parent.name
        return int(name) if name.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=major_version)
    if candidates:
        return candidates[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.check_output([pg_config, "--bindir"], text=True).strip()
        if Path(bindir, "pg_ctl").exists():
            return str(Path(bindir, "pg_ctl"))
    raise RuntimeError("no PostgreSQL server binaries (pg_ctl) found; install postgresql")


def _unprivileged_pg_ctl(pg_ctl: str, workdir: Path) -> str:
    """PostgreSQL refuses to run as root: as root, run pg_ctl as the `postgres` user."""
    if os.geteuid() != 0:
        return pg_ctl
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
    shutil.chown(workdir, user="postgres", group="postgres")
    wrapper = workdir / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\nexec {runuser} -u postgres -- {pg_ctl} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@contextmanager
def running_postgresql() -> Iterator[PostgreSQLExecutor]:
    """Start a PostgreSQL server on a free port in a temporary directory; stop and remove it."""
    workdir = Path(tempfile.mkdtemp(prefix="cvm-postgresql-"))
    workdir.chmod(0o755)
    try:
        pg_ctl = _unprivileged_pg_ctl(_pg_ctl(), workdir)
        from pytest_postgresql.executor import PostgreSQLExecutor

        executor = PostgreSQLExecutor(
            executable=pg_ctl,
            host="127.0.0.1",
            port=free_port(),
            datadir=str(workdir / "data"),
            unixsocketdir=str(workdir),
            logfile=str(workdir / "postgresql.log"),
            startparams="-w",
            dbname="cvm",
            user="postgres",
            timeout=int(STARTUP_TIMEOUT_S),
        )
        with executor:
            executor.wait_for_postgres()
            yield executor
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def fresh_database(server: PostgreSQLExecutor, name: str) -> Iterator[str]:
    """An empty database `name` on `server`, dropped afterwards; yields its SQLAlchemy URL."""
    from pytest_postgresql.janitor import DatabaseJanitor

    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=name,
        version=server.version,
        password=server.password or None,
    )
    with janitor:
        yield f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"
