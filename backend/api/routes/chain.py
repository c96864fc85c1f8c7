"""`/v1/chain`: the chain and contracts this backend follows (the EIP-712 domain)."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import Context
from cvm.api_models import ChainInfo

router = APIRouter(tags=["chain"])


@router.get("/chain", response_model=ChainInfo, summary="Chain id and contract addresses")
def chain_info(context: Context) -> ChainInfo:
    return context.chain
