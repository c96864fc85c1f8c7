"""The failover watch (a leader role run with the verifier's key): moves a lease whose node
went silent to another node, when the lease's key policy allows it (`watch`)."""

from backend.liveness.chain import ChainFailover
from backend.liveness.watch import (
    AttestationFacts,
    FailoverChain,
    FailoverResult,
    FailoverWatch,
)

__all__ = [
    "AttestationFacts",
    "ChainFailover",
    "FailoverChain",
    "FailoverResult",
    "FailoverWatch",
]
