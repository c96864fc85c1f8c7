"""The FastAPI application: routers under /v1, JSON errors, metrics at /metrics."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from backend.api.console import install_web
from backend.api.deps import AppContext
from backend.api.errors import install_error_handlers
from backend.api.limits import AbuseGuardMiddleware, RateLimiter
from backend.api.metrics import ApiMetrics, MetricsMiddleware
from backend.api.routes import (
    auth,
    chain,
    console,
    evidence,
    guest_keys,
    health,
    images,
    keys,
    leases,
    nodes,
    secrets,
)
from cvm.api_models import ErrorBody

API_PREFIX = "/v1"


def create_app(context: AppContext) -> FastAPI:
    """A FastAPI app serving `context` (store, settings, chain); one per process."""
    app = FastAPI(
        # No /docs or /redoc: FastAPI's pages load unpinned scripts from a CDN, and they would
        # run on the wallet console's origin, beside its session. The OpenAPI document is
        # served (`/openapi.json`); open it in any OpenAPI viewer on another origin.
        docs_url=None,
        redoc_url=None,
        title="cvm marketplace",
        version="1",
        summary="Leases of AMD SEV-SNP confidential VMs, matched to nodes and attested on chain",
        responses={422: {"model": ErrorBody, "description": "invalid input"}},
    )
    app.state.context = context
    install_error_handlers(app)
    v1 = APIRouter(prefix=API_PREFIX)
    for module in (
        health,
        chain,
        nodes,
        leases,
        evidence,
        guest_keys,
        auth,
        secrets,
        console,
        images,
        keys,
    ):
        v1.include_router(module.router)
    app.include_router(v1)
    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.add_route("/metrics", metrics.render, include_in_schema=False)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if context.limiter is None:
        context.limiter = RateLimiter.from_settings(context.settings, clock=context.clock)
    # Outermost: a refused request costs no routing, parsing or body read.
    app.add_middleware(
        AbuseGuardMiddleware, limiter=context.limiter, settings=context.settings, prefix=API_PREFIX
    )
    install_web(app, API_PREFIX)
    return app
