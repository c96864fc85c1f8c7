"""The verifier service: appraise submitted attestations and confirm them on chain."""

from backend.verifier.service import Verifier, VerifierConfig

__all__ = ["Verifier", "VerifierConfig"]
