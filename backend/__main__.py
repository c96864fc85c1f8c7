"""`python -m backend [--host H] [--port P]`: run the backend with the settings of cvm.config.

Reads the deployment record (`CVM_DEPLOYMENT_FILE`), the store (`CVM_DATABASE_URL`), the
broker (`CVM_BROKER_URL`), and, if `CVM_VERIFIER_KEYSTORE` is set, unlocks the verifier key
with the password in `CVM_VERIFIER_PASSWORD_FILE` (never from the command line).
"""

from __future__ import annotations

import argparse
import logging

from cryptography import x509

from backend.service import BackendService
from cvm.chain import Deployment, connect
from cvm.config import Settings, get_settings
from cvm.wallet import load_account, read_password_file


def verifier_roots(trust_simulated: bool, settings: Settings) -> list[x509.Certificate] | None:
    """None (AMD's pinned roots only) unless told to trust the simulated AMD-SP as well."""
    if not trust_simulated:
        return None
    # Opt-in only (`cvm up` does, and the verifier then marks every such report simulated):
    # reports signed by the simulated AMD-SP prove nothing outside a demo.
    from cvm.attestation.sim import roots_trusting_simulated

    return roots_trusting_simulated(settings.sim_amd_dir or settings.data_dir / "sim-amd")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--trust-simulated-amd",
        action="store_true",
        help="also trust the simulated AMD root in CVM_SIM_AMD_DIR (local demos and tests only)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    deployment = Deployment.load(settings.deployment_file)
    # The backend starts before the chain may answer; the indexer retries by itself.
    w3 = connect(deployment, settings=settings, check=False).w3
    verifier = None
    if settings.verifier_keystore is not None:
        if settings.verifier_password_file is None:
            raise SystemExit("CVM_VERIFIER_KEYSTORE needs CVM_VERIFIER_PASSWORD_FILE")
        password = read_password_file(settings.verifier_password_file)
        verifier = load_account(settings.verifier_keystore, password)
    trusted_roots = verifier_roots(args.trust_simulated_amd, settings)
    intermediates = []
    if args.trust_simulated_amd:
        from cvm.disputes import simulated_intermediates

        intermediates = simulated_intermediates(settings.sim_amd_dir)
    service = BackendService(
        settings,
        deployment,
        w3,
        verifier_account=verifier,
        trusted_roots=trusted_roots,
        trusted_intermediates=intermediates,
    )
    service.serve(args.host, args.port)


if __name__ == "__main__":
    main()
