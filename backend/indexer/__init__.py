"""Chain indexer: contract events into the store, with confirmations and reorg rollback."""

from backend.indexer.indexer import BatchResult, Indexer, IndexerError, marketplace_decoder
from backend.indexer.projections import NODE_RESCORING_EVENTS

__all__ = ["NODE_RESCORING_EVENTS", "BatchResult", "Indexer", "IndexerError", "marketplace_decoder"]
