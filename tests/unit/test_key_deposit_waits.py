"""A key deposit right after `cvm rent` creates the lease waits for the backend to index it
(the backend takes deposits for indexed leases only): no 404 that would leave the chain's
policy naming a key version the backend never took; a backend that never learns of the lease
stops it before anything is signed or sent."""

from __future__ import annotations

import pytest

from cvm.api_client import ApiError
from cvm.key_release import KeyServiceError, _wait_indexed


class SlowIndexer:
    def __init__(self, misses: int, status: int = 404) -> None:
        self.misses = misses
        self.status = status
        self.asked = 0

    def get_lease(self, lease_id: int) -> None:
        self.asked += 1
        if self.asked <= self.misses:
            raise ApiError(self.status, f"lease {lease_id} not found")


def test_the_deposit_waits_until_the_backend_indexed_the_lease() -> None:
    api = SlowIndexer(misses=3)
    _wait_indexed(api, 7, timeout_s=30)
    assert api.asked == 4


def test_a_lease_never_indexed_stops_the_deposit() -> None:
    with pytest.raises(KeyServiceError, match="does not know lease 7 yet"):
        _wait_indexed(SlowIndexer(misses=10**6), 7, timeout_s=0.3)


def test_another_refusal_is_not_waited_out() -> None:
    api = SlowIndexer(misses=5, status=503)
    with pytest.raises(KeyServiceError, match="503"):
        _wait_indexed(api, 7, timeout_s=30)
    assert api.asked == 1
