"""The cvm marketplace backend: API, store, chain indexer, matcher and verifier."""
