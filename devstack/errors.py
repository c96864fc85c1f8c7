"""The one error type of the embedded stack runner."""

from __future__ import annotations


class StackError(Exception):
    """The embedded stack could not start, be found, or stop cleanly."""
