"""Keeping a lease's reservation alive at the backend while its guest boots before the accept.

In the combined accept the node boots the guest while the lease is still OPEN and accepts only
with the guest's first report (`acceptAndSubmit`). The backend's matcher gives a matched node
`CVM_MATCH_ACCEPT_TIMEOUT_S` to accept, then dispatches the lease to the next node, which would
boot a second guest for it. While the boot, the report and its upload last, the node tells the
backend (node-signed) it is still at it, first after `FIRST_DELAY_S` (a faster boot needs no
call); each answer names the new deadline, and the next call comes at half the time left (at
most `max_interval_s` later). The backend bounds the whole by
its `CVM_MATCH_BOOT_MAX_S` after the dispatch.

Best effort: a failed call is logged once and the boot goes on (at worst the lease is
dispatched to another node as before, and the chain decides who accepts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient, ApiError
from cvm.eip712 import Domain

log = logging.getLogger(__name__)

# The longest wait between two keepalives, and the shortest: the deadline the backend returns
# decides in between (half the time left).
MAX_INTERVAL_S = 30.0
MIN_INTERVAL_S = 0.5
# The first call waits this long: a boot, report and upload done sooner (the simulated launcher,
# a warm guest) needs none, and it is well inside any accept timeout the backend gives.
FIRST_DELAY_S = 2.0
# A refused keepalive is not repeated (not matched to this node, no live reservation of it,
# its maximum reached); one not heard or too many is (the next one may pass).
_RETRIED = frozenset({0, 408, 429})


class ReservationKeepalive:
    """Keeps this node's reservations alive at the backend, one thread per lease booting."""

    def __init__(
        self,
        api: ApiClient,
        node_key: LocalAccount,
        domain: Domain,
        *,
        max_interval_s: float = MAX_INTERVAL_S,
        min_interval_s: float = MIN_INTERVAL_S,
        first_delay_s: float = FIRST_DELAY_S,
    ) -> None:
        self.api = api
        self.node_key = node_key
        self.domain = domain
        self.max_interval_s = max_interval_s
        self.min_interval_s = min_interval_s
        self.first_delay_s = first_delay_s

    @contextmanager
    def kept(self, lease_id: int) -> Iterator[None]:
        """Keep the lease's reservation alive for the duration of the block."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(lease_id, stop), name=f"keepalive-{lease_id}", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            # A call under way ends within the API client's timeout; not waited for longer.
            thread.join(timeout=1.0)

    def _run(self, lease_id: int, stop: threading.Event) -> None:
        logged = False
        if stop.wait(self.first_delay_s):
            return
        while not stop.is_set():
            wait = self.max_interval_s
            try:
                kept = self.api.keep_reservation_alive(
                    lease_id, node_key=self.node_key.key, domain=self.domain
                )
            except (ApiError, OSError) as exc:
                status = exc.status_code if isinstance(exc, ApiError) else 0
                retried = status in _RETRIED or status >= 500
                if not logged:
                    logged = True
                    log.warning("lease %s: reservation keepalive failed%s: %s", lease_id,
                                "" if retried else " (not repeated)", exc)  # fmt: skip
                if not retried:
                    return
            else:
                if kept.status != "reserved":
                    return  # accepted: nothing left to keep alive
                log.debug("lease %s: reservation kept for %.1f s", lease_id, kept.expires_in_s)
                wait = kept.expires_in_s / 2
            stop.wait(min(max(wait, self.min_interval_s), self.max_interval_s))
