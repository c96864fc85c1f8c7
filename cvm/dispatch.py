"""Names shared by the Celery producer (backend) and consumers (node agents).

The backend never imports the node agent, so both sides agree on task names and queue
names here and the backend sends tasks by name.
"""

from __future__ import annotations

# One task per lease step; each takes the lease id (an int) and nothing else, so that a
# redelivered message is harmless (tasks are idempotent on the lease id).
TASK_HANDLE_LEASE = "cvm.node.handle_lease"
TASK_REATTEST = "cvm.node.reattest"
TASK_STOP_LEASE = "cvm.node.stop_lease"


def node_queue(node_address: str) -> str:
    """The Celery queue a node agent consumes: `node.<lower-case 0x address>`."""
    address = node_address.lower()
    if not (address.startswith("0x") and len(address) == 42):
        raise ValueError(f"not a 20-byte hex address: {node_address!r}")
    int(address, 16)
    return f"node.{address}"
