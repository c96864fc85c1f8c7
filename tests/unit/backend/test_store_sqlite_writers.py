"""Concurrent read-then-write transactions on the embedded SQLite store never fail."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from backend.store.db import Store


def test_concurrent_read_modify_write_transactions_all_commit(tmp_path: Path) -> None:
    # Deferred transactions that read and then write fail with "database is locked" when
    # they race (the busy handler does not retry a lock upgrade); the store must serialise them.
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with store.session() as session:
        session.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        session.execute(text("INSERT INTO counter VALUES (1, 0)"))
    errors: list[BaseException] = []
    threads_n, rounds = 8, 25

    def bump() -> None:
        try:
            for _ in range(rounds):
                with store.session() as session:
                    n = session.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
                    session.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with store.session() as session:
        total = session.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
    # No lost update either: each read-modify-write saw the previous one's result.
    assert total == threads_n * rounds
    store.close()
