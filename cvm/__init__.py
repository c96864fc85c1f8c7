"""cvm: the shared SDK of the confidential-VM marketplace (chain bindings, attestation, CLI)."""

__version__ = "0.1.0"
