"""AMD's KDS for the backend's verifier: the chip's VCEK, cached, with a backoff while KDS does
not answer. What a verifier makes of a report failing on its evidence's certificates is
`cvm.kds_recheck`'s (shared with `cvm attestation dispute`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cvm.attestation.abi import Report
from cvm.attestation.errors import KdsError, KdsNotFound
from cvm.attestation.kds import KDS_BASE_URL, CachingKds, vcek_url
from cvm.attestation.product import Product
from cvm.kds_recheck import CONCLUSIVE, Recheck, VcekLookup, needs_kds, recheck

__all__ = ["CONCLUSIVE", "KdsVceks", "Recheck", "VcekLookup", "needs_kds", "recheck"]

# Backoff of KDS after it failed to answer: doubling from the first to the longest.
KDS_BACKOFF_S = 30.0
KDS_MAX_BACKOFF_S = 600.0


class KdsVceks:
    """The VCEK (DER) AMD issued for a report's chip and TCB, from the cache or the KDS at
    `base_url`; a `(report, product) -> bytes` callable (`cvm.disputes.VcekSource`).

    Raises `KdsNotFound` when the KDS says it has none, `KdsError` when it cannot be asked or
    did not answer. After a failure to answer, the KDS is not asked again for `backoff_s`
    (doubling up to `max_backoff_s`, reset by any answer): callers meanwhile get a `KdsError`
    at once, cached certificates are still served."""

    def __init__(
        self,
        cache: CachingKds,
        *,
        base_url: str = KDS_BASE_URL,
        clock: Callable[[], float],
        backoff_s: float = KDS_BACKOFF_S,
        max_backoff_s: float = KDS_MAX_BACKOFF_S,
    ) -> None:
        self.cache = cache
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = float("-inf")

    def __call__(self, report: Report, product: Product) -> bytes:
        url = vcek_url(report, product, self.base_url)
        cached = self.cache.cached(url)
        if cached is not None:
            return cached
        with self._lock:
            wait = self._retry_at - self.clock()
        if wait > 0:
            raise KdsError(f"AMD's KDS did not answer lately: next try in {wait:.0f} s")
        try:
            data = self.cache.fetch(url)
        except KdsNotFound:
            self._answered()
            raise
        except KdsError:
            with self._lock:
                self._failures += 1
                delay = min(self.backoff_s * 2 ** min(self._failures - 1, 20), self.max_backoff_s)
                self._retry_at = self.clock() + delay
            raise
        self._answered()
        return data

    def _answered(self) -> None:
        with self._lock:
            self._failures = 0
            self._retry_at = float("-inf")
