"""The verifier service: appraise submitted attestations and confirm them on chain; watch
the other verifiers' verdicts and dispute the wrong ones."""

from backend.verifier.kds import KdsVceks
from backend.verifier.liveness import LivenessResult, LivenessWatch
from backend.verifier.service import NO_EVIDENCE, Judgement, Verifier, VerifierConfig
from backend.verifier.watcher import Watcher, WatchResult

__all__ = [
    "NO_EVIDENCE",
    "Judgement",
    "KdsVceks",
    "LivenessResult",
    "LivenessWatch",
    "Verifier",
    "VerifierConfig",
    "WatchResult",
    "Watcher",
]
