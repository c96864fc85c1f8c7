"""The node agent's one error type, with the few refinements its callers act on."""

from __future__ import annotations


class AgentError(Exception):
    """Something the node agent could not do; the message says what and why."""


class CapacityExceeded(AgentError):
    """A lease does not fit in the host's free capacity: the agent refuses it."""


class LauncherError(AgentError):
    """A launcher could not start, inspect, stop or query a guest."""


class GuestRefused(LauncherError):
    """The guest agent answered and refused the request (e.g. secrets sealed to another
    guest): asking again gets the same answer. Not for a silent or failing agent."""


class HostUnsupported(LauncherError):
    """The host lacks what a launcher needs (e.g. SEV-SNP support or a recent QEMU)."""


class LeaseNotOurs(AgentError):
    """The chain says the lease belongs to another node, or is not open for us."""


class LeaseUnservable(LeaseNotOurs):
    """This node cannot serve the lease (it cannot produce the expected measurement, or the
    guest cannot be launched here): refused before accept, declined after."""


class ImageUnavailable(LauncherError):
    """The lease's image is not on this host and could not be fetched now (the backend is
    unreachable or busy): worth trying again."""


class ImageRefused(LauncherError):
    """The lease's image cannot be had: the backend has none under its id, or what it served
    does not hash to the id. Never booted; the lease is refused (or declined)."""


class GuestKeyClaimed(LauncherError):
    """The guest answered with a key another lease claimed first (its evidence proved the key
    earlier: a genuine report of that lease binding it): the verifiers would reject the
    report and slash the node. A renter with root in two guests can copy one's keys into the
    other; the lease is given back while free."""


class KeyClaimUnknown(AgentError):
    """The backend could not say whether another lease claimed the guest's key (it is
    unreachable, or answered an error): nothing is submitted until it can."""
