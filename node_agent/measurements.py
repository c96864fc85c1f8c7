"""Which launch measurements this node can produce, checked before it accepts a lease.

A lease names the measurement its guest must have; a node that accepts a lease it cannot
launch with that measurement cannot submit a truthful attestation and would be reported
for a missed one. `producible_measurements` is the one place that says what this node can
launch: today the measurements its operator configured (`CVM_NODE_MEASUREMENTS`); once
leases name their image, the image's computed measurement joins them here.
"""

from __future__ import annotations

from collections.abc import Collection

from node_agent.lease_terms import LeaseTerms


def producible_measurements(configured: Collection[bytes], terms: LeaseTerms) -> frozenset[bytes]:
    """The launch measurements this node can produce for the lease of `terms`."""
    del terms  # the lease's own image (not known to the agent yet) will add its measurement
    return frozenset(configured)


def unservable_reason(configured: Collection[bytes], terms: LeaseTerms) -> str | None:
    """Why this node cannot serve the lease of `terms`, or None if it can."""
    if terms.expected_measurement in producible_measurements(configured, terms):
        return None
    if not configured:
        return (
            "no launch measurement is configured (CVM_NODE_MEASUREMENTS), so expected "
            f"0x{terms.expected_measurement.hex()} cannot be produced"
        )
    expected = terms.expected_measurement.hex()
    return f"expected measurement 0x{expected} is not one this node produces"
