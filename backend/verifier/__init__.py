"""The verifier service: appraise submitted attestations and confirm them on chain."""

from backend.verifier.liveness import LivenessResult, LivenessWatch
from backend.verifier.service import NO_EVIDENCE, Verifier, VerifierConfig

__all__ = ["NO_EVIDENCE", "LivenessResult", "LivenessWatch", "Verifier", "VerifierConfig"]
