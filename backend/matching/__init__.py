"""Matching leases to nodes: an in-memory scored index and the service around it."""

from backend.matching.index import Demand, MatchIndex, NodeEntry, Reservation
from backend.matching.service import Matcher, reputation

__all__ = ["Demand", "MatchIndex", "Matcher", "NodeEntry", "Reservation", "reputation"]
