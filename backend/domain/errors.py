"""The domain layer's one error type, by kind of refusal (the API maps each to a status)."""

from __future__ import annotations


class DomainError(Exception):
    """A request the marketplace refuses; the message says why, for the caller."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(DomainError):
    """The request is malformed or out of range."""


class Unauthenticated(DomainError):
    """No valid proof of who is asking (session, signature)."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """The thing asked about does not exist (or is not indexed yet)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Conflict(DomainError):
    """The request contradicts what is already recorded (a replay, a race lost)."""


class RateLimited(DomainError):
    """The caller sent too much; it may try again after `retry_after_s` seconds."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, retry_after_s)


class TooLarge(DomainError):
    """What was sent is larger than a limit allows (a body, a header, a quota)."""


class OutOfSpace(DomainError):
    """The service's storage for this kind of thing is full (the request itself is fine)."""
