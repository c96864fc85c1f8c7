"""`/v1/auth`: Sign-In with Ethereum (EIP-4361) issuing session tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.api.deps import Context, DbSession, Renter
from backend.api.limits import client_key
from backend.domain import auth
from cvm.api_models import Challenge, Login, NonceRequest, Session

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/nonce",
    status_code=201,
    response_model=Challenge,
    summary="A fresh, single-use SIWE challenge for an address",
    responses={429: {"description": "too many requests from this client"}},
)
def create_nonce(
    body: NonceRequest, request: Request, context: Context, session: DbSession
) -> Challenge:
    # Nobody has proved who they are yet: counted per client IP, since counting per address
    # would let anyone use up any address's allowance and stop it signing in.
    context.limit_client(client_key(request.scope), "nonce")
    return auth.issue_challenge(
        session,
        body.address,
        host=context.settings.api_public_host,
        chain_id=context.chain.chain_id,
        now=context.now(),
        ttl_s=context.settings.siwe_nonce_ttl_s,
        max_live=context.settings.siwe_max_live_nonces,
    )


@router.post(
    "/login",
    response_model=Session,
    summary="Exchange a signed SIWE message for a session token",
    responses={
        401: {"description": "bad signature, unknown or expired nonce"},
        429: {"description": "too many attempts from this client"},
    },
)
def login(body: Login, request: Request, context: Context, session: DbSession) -> Session:
    # The message's address is unproven until the signature verifies: counted per client IP.
    context.limit_client(client_key(request.scope), "login")
    return auth.sign_in(
        session,
        body,
        host=context.settings.api_public_host,
        now=context.now(),
        ttl_s=context.settings.session_ttl_s,
    )


@router.post("/logout", status_code=204, responses={401: {"description": "not signed in"}})
def logout(renter: Renter, context: Context, session: DbSession) -> None:
    context.limit_address(renter, "logout")
    auth.sign_out(session, renter)
