"""The node's read of a lease's private spec (image, SSH key, settings) from the backend.

The backend gives it only to the node the lease was matched to, on a request signed with
the node key. The spec is the renter's wish, not a trust anchor: what the guest really
runs is proved by its measurement, which the verifiers compare with the lease's.
"""

from __future__ import annotations

import logging

from eth_account.signers.local import LocalAccount

from cvm.api_client import ApiClient, ApiError
from cvm.images import ImageError, normalize_id

log = logging.getLogger(__name__)


class PrivateSpecSource:
    """Which image a lease's guest boots, from its private spec."""

    def __init__(self, api: ApiClient, node_key: LocalAccount) -> None:
        self.api = api
        self.node_key = node_key
        # A lease's spec never changes (its hash is on chain): read it once per lease.
        self._images: dict[int, str] = {}

    def image_for(self, lease_id: int) -> str:
        """The image id the renter named, or "" (the launcher's default) when the spec is
        missing, unreadable or names no content-addressed image."""
        if lease_id in self._images:
            return self._images[lease_id]
        try:
            spec = self.api.lease_spec_as_node(lease_id, node_key=self.node_key.key)
        except (ApiError, OSError) as exc:
            log.warning("lease %s: no private spec from the backend (%s)", lease_id, exc)
            return ""  # not remembered: the backend may have it on the next try
        try:
            image = normalize_id(spec.image)
        except ImageError:
            log.info("lease %s: image %r is not an image id; booting the default", lease_id,
                     spec.image)  # fmt: skip
            image = ""
        self._images[lease_id] = image
        return image
