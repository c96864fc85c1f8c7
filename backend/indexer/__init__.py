"""Chain indexer: contract events into the store, with confirmations and reorg rollback."""

from backend.indexer.indexer import BatchResult, Indexer, IndexerError, marketplace_decoder

__all__ = ["BatchResult", "Indexer", "IndexerError", "marketplace_decoder"]
