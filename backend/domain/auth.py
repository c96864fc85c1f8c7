"""Sign-In with Ethereum (EIP-4361, the `siwe` package): single-use challenges and sessions.

Only the SHA-256 of a session token is stored, so a leaked database opens no session.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from eth_utils import to_checksum_address
from siwe import SiweMessage, generate_nonce
from siwe.siwe import VerificationError as SiweVerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.domain.errors import InvalidInput, Unauthenticated
from backend.store import SiweNonce, UserSession
from cvm.api_models import Challenge, Login
from cvm.api_models import Session as SessionView

STATEMENT = "Sign in to cvm to manage your confidential VM leases."


def _siwe_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_challenge(
    session: Session,
    address: str,
    *,
    host: str,
    chain_id: int,
    now: datetime,
    ttl_s: int,
    max_live: int,
) -> Challenge:
    """A fresh SIWE message for `address` to sign, usable once within `ttl_s`.

    At most `max_live` unanswered challenges per address: the oldest is dropped to make room
    (nobody can fill the store for one address, and, since anyone may ask for any address,
    refusing instead would let anyone stop that address signing in).
    """
    key = address.lower()
    live = session.scalars(
        select(SiweNonce.nonce)
        .where(SiweNonce.address == key, SiweNonce.expires_at > now)
        .order_by(SiweNonce.expires_at.desc(), SiweNonce.nonce)
    ).all()
    if len(live) >= max_live:
        session.execute(delete(SiweNonce).where(SiweNonce.nonce.in_(live[max_live - 1 :])))
    expires_at = now + timedelta(seconds=ttl_s)
    message = SiweMessage(
        domain=host,
        address=to_checksum_address(address),
        statement=STATEMENT,
        uri=f"https://{host}",
        version="1",
        chain_id=chain_id,
        nonce=generate_nonce(),
        issued_at=_siwe_time(now),
        expiration_time=_siwe_time(expires_at),
    )
    # Expired challenges are garbage: drop them while we are writing anyway.
    session.execute(delete(SiweNonce).where(SiweNonce.expires_at <= now))
    text = message.prepare_message()
    session.add(
        SiweNonce(nonce=message.nonce, address=address.lower(), message=text, expires_at=expires_at)
    )
    return Challenge(nonce=message.nonce, message=text, expires_at=expires_at)


def sign_in(session: Session, login: Login, *, host: str, now: datetime, ttl_s: int) -> SessionView:
    """Exchange a signed challenge for a session token valid `ttl_s` seconds."""
    try:
        message = SiweMessage.from_message(login.message)
    except Exception as exc:  # the parser raises several types for a malformed message
        raise InvalidInput(f"not an EIP-4361 message: {exc}") from exc
    challenge = session.get(SiweNonce, message.nonce)
    if challenge is None or challenge.expires_at <= now:
        raise Unauthenticated("unknown or expired nonce: request a new one")
    if challenge.message != login.message:
        raise Unauthenticated("message differs from the challenge issued for this nonce")
    # Single use: the nonce is gone whatever the outcome (this is committed only on success,
    # so a failed attempt is rolled back; a replay after success finds no nonce).
    session.delete(challenge)
    try:
        message.verify(login.signature, domain=host, nonce=challenge.nonce, timestamp=now)
    except SiweVerificationError as exc:
        raise Unauthenticated(f"SIWE verification failed: {type(exc).__name__}") from exc
    except Exception as exc:
        raise Unauthenticated(f"SIWE verification failed: {exc}") from exc
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=ttl_s)
    address = str(message.address).lower()
    session.add(
        UserSession(token_sha256=token_digest(token), address=address, expires_at=expires_at)
    )
    return SessionView(token=token, address=to_checksum_address(address), expires_at=expires_at)


def session_address(session: Session, token: str, now: datetime) -> str:
    """The renter a session token belongs to, or `Unauthenticated` if unknown or expired."""
    row = session.get(UserSession, token_digest(token))
    if row is None or row.expires_at <= now:
        raise Unauthenticated("session token is unknown or expired; sign in again")
    return row.address


def sign_out(session: Session, address: str) -> None:
    """End every session of `address`."""
    session.execute(delete(UserSession).where(UserSession.address == address))
