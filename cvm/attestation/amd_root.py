"""Which root a verified report chains to; shared by the verifier, the store and the API
(a module of its own so that the wire models need not load the certificate code)."""

from __future__ import annotations

from enum import StrEnum


class AmdRoot(StrEnum):
    """AMD: the chain ends in one of AMD's pinned ARKs. SIMULATED: it ends in a root the
    verifier was told to trust besides them, in cvm only ever the simulated AMD-SP of tests
    and local stacks; such a report proves nothing about hardware."""

    AMD = "amd"
    SIMULATED = "simulated"
