"""`/v1/auth`: Sign-In with Ethereum (EIP-4361, the `siwe` package) issuing session tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from eth_utils import to_checksum_address
from fastapi import APIRouter
from siwe import SiweMessage, generate_nonce
from siwe.siwe import VerificationError as SiweVerificationError
from sqlalchemy import delete

from backend.api.deps import Context, DbSession, Renter, token_digest
from backend.api.errors import ApiError
from backend.api.schemas import LoginIn, NonceIn, NonceOut, SessionOut
from backend.store import SiweNonce, UserSession

router = APIRouter(prefix="/auth", tags=["auth"])

STATEMENT = "Sign in to cvm to manage your confidential VM leases."


@router.post(
    "/nonce",
    status_code=201,
    response_model=NonceOut,
    summary="A fresh, single-use SIWE challenge for an address",
)
def create_nonce(body: NonceIn, context: Context, session: DbSession) -> NonceOut:
    now = context.now()
    expires_at = now + timedelta(seconds=context.settings.siwe_nonce_ttl_s)
    host = context.settings.api_public_host
    message = SiweMessage(
        domain=host,
        address=to_checksum_address(body.address),
        statement=STATEMENT,
        uri=f"https://{host}",
        version="1",
        chain_id=context.chain.chain_id,
        nonce=generate_nonce(),
        issued_at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        expiration_time=expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    # Expired challenges are garbage: drop them while we are writing anyway.
    session.execute(delete(SiweNonce).where(SiweNonce.expires_at <= now))
    text = message.prepare_message()
    session.add(
        SiweNonce(
            nonce=message.nonce, address=body.address.lower(), message=text, expires_at=expires_at
        )
    )
    return NonceOut(nonce=message.nonce, message=text, expires_at=expires_at)


@router.post(
    "/login",
    response_model=SessionOut,
    summary="Exchange a signed SIWE message for a session token",
    responses={401: {"description": "bad signature, unknown or expired nonce"}},
)
def login(body: LoginIn, context: Context, session: DbSession) -> SessionOut:
    try:
        message = SiweMessage.from_message(body.message)
    except Exception as exc:  # the parser raises several types for a malformed message
        raise ApiError(422, f"not an EIP-4361 message: {exc}") from exc
    challenge = session.get(SiweNonce, message.nonce)
    now = context.now()
    if challenge is None or challenge.expires_at <= now:
        raise ApiError(401, "unknown or expired nonce: request a new one")
    if challenge.message != body.message:
        raise ApiError(401, "message differs from the challenge issued for this nonce")
    # Single use: the nonce is gone whatever the outcome (this is committed only on success,
    # so a failed attempt is rolled back; a replay after success finds no nonce).
    session.delete(challenge)
    try:
        message.verify(
            body.signature,
            domain=context.settings.api_public_host,
            nonce=challenge.nonce,
            timestamp=now,
        )
    except SiweVerificationError as exc:
        raise ApiError(401, f"SIWE verification failed: {type(exc).__name__}") from exc
    except Exception as exc:
        raise ApiError(401, f"SIWE verification failed: {exc}") from exc
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=context.settings.session_ttl_s)
    address = str(message.address).lower()
    session.add(
        UserSession(token_sha256=token_digest(token), address=address, expires_at=expires_at)
    )
    return SessionOut(token=token, address=to_checksum_address(address), expires_at=expires_at)


@router.post("/logout", status_code=204, responses={401: {"description": "not signed in"}})
def logout(renter: Renter, session: DbSession) -> None:
    session.execute(delete(UserSession).where(UserSession.address == renter))
