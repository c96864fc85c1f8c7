"""Names shared by the Celery producer (backend) and consumers (node agents).

The backend never imports the node agent, so both sides agree on task names and queue
names here and the backend sends tasks by name.
"""

from __future__ import annotations

# The one task the backend sends: take a matched lease as far as it goes (accept, launch,
# attest). It takes the lease id (an int) and nothing else, so that a redelivered message
# is harmless (the task is idempotent on the lease id). Re-attesting and stopping are the
# agent's own schedule (its reconciler), not messages: a broker outage must not make a
# node miss an attestation deadline or keep a guest whose lease closed.
TASK_HANDLE_LEASE = "cvm.node.handle_lease"

# A nudge, sent when the lease's renter queued sealed secrets: relay them to the guest now
# rather than at the node's next reconciler pass (which stays the fallback, so a lost or
# refused nudge delays the secrets, never loses them). Takes the lease id only; idempotent.
TASK_SERVE_GUEST = "cvm.node.serve_guest"

# On demand: snapshot the lease's disk now (the node also does it every
# CVM_SNAPSHOT_INTERVAL_S). Takes the lease id only; a lost message costs one interval.
TASK_SNAPSHOT_LEASE = "cvm.node.snapshot_lease"


def node_queue(node_address: str) -> str:
    """The Celery queue a node agent consumes: `node.<lower-case 0x address>`."""
    address = node_address.lower()
    if not (address.startswith("0x") and len(address) == 42):
        raise ValueError(f"not a 20-byte hex address: {node_address!r}")
    int(address, 16)
    return f"node.{address}"
