"""`/v1/auth`: Sign-In with Ethereum (EIP-4361) issuing session tokens."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import Context, DbSession, Renter
from backend.domain import auth
from cvm.api_models import Challenge, Login, NonceRequest, Session

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/nonce",
    status_code=201,
    response_model=Challenge,
    summary="A fresh, single-use SIWE challenge for an address",
)
def create_nonce(body: NonceRequest, context: Context, session: DbSession) -> Challenge:
    return auth.issue_challenge(
        session,
        body.address,
        host=context.settings.api_public_host,
        chain_id=context.chain.chain_id,
        now=context.now(),
        ttl_s=context.settings.siwe_nonce_ttl_s,
    )


@router.post(
    "/login",
    response_model=Session,
    summary="Exchange a signed SIWE message for a session token",
    responses={401: {"description": "bad signature, unknown or expired nonce"}},
)
def login(body: Login, context: Context, session: DbSession) -> Session:
    return auth.sign_in(
        session,
        body,
        host=context.settings.api_public_host,
        now=context.now(),
        ttl_s=context.settings.session_ttl_s,
    )


@router.post("/logout", status_code=204, responses={401: {"description": "not signed in"}})
def logout(renter: Renter, session: DbSession) -> None:
    auth.sign_out(session, renter)
