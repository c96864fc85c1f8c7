"""Celery producer: sends a matched lease to the node's own queue, by task name.

The backend never imports the node agent; both sides share only `cvm.dispatch` names.
"""

from __future__ import annotations

from celery import Celery

from cvm.dispatch import TASK_HANDLE_LEASE, TASK_SERVE_GUEST, node_queue


def make_producer(broker_url: str) -> Celery:
    """A Celery app used only to publish (no result backend: agents report on chain)."""
    app = Celery("cvm-backend", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        task_default_delivery_mode="persistent",
    )
    return app


class CeleryDispatcher:
    """`dispatch(lease_id, node)`: queue TASK_HANDLE_LEASE with args [lease_id] on node.<addr>."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, lease_id: int, node: str) -> None:
        self.app.send_task(TASK_HANDLE_LEASE, args=[lease_id], queue=node_queue(node))

    def serve_guest(self, lease_id: int, node: str) -> None:
        """Nudge the node to relay the lease's newly queued sealed secrets at once."""
        self.app.send_task(TASK_SERVE_GUEST, args=[lease_id], queue=node_queue(node))
