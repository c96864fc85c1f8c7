"""Which launch measurements this node can produce, checked before it accepts a lease.

A lease names the measurement its guest must have; a node that accepts a lease it cannot
launch with that measurement cannot submit a truthful attestation and would be reported
for a missed one. `producible_measurements` is the one place that says what this node can
launch: the measurements its operator configured (`CVM_NODE_MEASUREMENTS`) and, with a
launcher that boots renters' images, the measurement of the lease's own image.
"""

from __future__ import annotations

from collections.abc import Collection

from node_agent.lease_terms import LeaseTerms


def producible_measurements(
    configured: Collection[bytes], image_measurement: bytes | None = None
) -> frozenset[bytes]:
    """The launch measurements this node can produce for a lease: the configured ones, and
    the measurement of the lease's own image when the launcher boots it (`image_measurement`)."""
    return frozenset(configured) | ({image_measurement} if image_measurement else set())


def unservable_reason(
    configured: Collection[bytes], terms: LeaseTerms, image_measurement: bytes | None = None
) -> str | None:
    """Why this node cannot serve the lease of `terms`, or None if it can."""
    if terms.expected_measurement in producible_measurements(configured, image_measurement):
        return None
    if not configured and image_measurement is None:
        return (
            "no launch measurement is configured (CVM_NODE_MEASUREMENTS), so expected "
            f"0x{terms.expected_measurement.hex()} cannot be produced"
        )
    expected = terms.expected_measurement.hex()
    return f"expected measurement 0x{expected} is not one this node produces"
