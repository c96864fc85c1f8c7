"""The web console: its static files at `/` and what the page needs to reach the chain itself.

The console is built from `web/` by `make web` (npm, from the lock file) into `web/dist`.
A backend without it still serves the whole API and says at `/` how to build it.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from backend.api.deps import Context
from backend.api.routes import timeline
from cvm.api_models import ChainInfo, ConsoleConfig
from cvm.chain import Deployment
from cvm.chain.connection import resolve_rpc_url
from cvm.config import Settings

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "web" / "dist"

router = APIRouter(prefix="/console", tags=["console"])

_NOT_BUILT = """<!doctype html><html lang="en"><meta charset="utf-8">
<title>cvm: console not built</title>
<p>The cvm web console is not built. Run <code>make web</code> in the repository (or
<code>make install</code>) and restart the backend. The API is served under /v1 as
usual (its OpenAPI document: <a href="/openapi.json">/openapi.json</a>).</p></html>"""


# The page is a wallet dApp that shows bytes others control (guest consoles, reports): only its
# own scripts run, nothing may frame it (clickjacking a signature), no plugin, no <base>. It
# reaches the backend (same origin) and the chain's RPC, which may be anywhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self' http: https: ws: wss:; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


@cache
def _deployment(path: Path) -> Deployment | None:
    try:
        return Deployment.load(path)
    except Exception:  # no record (tests, a bare API): the settings alone say where the RPC is
        return None


def console_config(settings: Settings, chain: ChainInfo) -> ConsoleConfig:
    """The chain the backend follows and the RPC URL by `cvm.chain`'s precedence rule."""
    deployment = _deployment(Path(settings.deployment_file))
    extra = deployment.extra if deployment is not None else {}
    return ConsoleConfig(
        chain_id=chain.chain_id,
        rpc_url=resolve_rpc_url(None, deployment, settings),
        node_registry=chain.node_registry,
        lease_market=chain.lease_market,
        attestation_registry=chain.attestation_registry,
        token=chain.token,
        demo_measurement=extra.get("demo_measurement"),
        local=bool(extra.get("local")),
    )


@router.get("/config", response_model=ConsoleConfig, summary="Chain and RPC the console uses")
def get_config(context: Context) -> ConsoleConfig:
    return console_config(context.settings, context.chain)


def install_web(app: FastAPI, api_prefix: str, directory: Path = CONSOLE_DIR) -> None:
    """What the console needs: its config, the lease timeline stream and its files at `/`.

    Call it last: the static files are mounted at `/`, so every route added before wins.
    """
    app.include_router(router, prefix=api_prefix)
    app.include_router(timeline.router, prefix=api_prefix)
    if (directory / "index.html").is_file():
        log.info("web console served at / from %s", directory)
        app.mount("/", _ConsoleFiles(directory=directory, html=True), name="console")
        return
    log.warning("web console not built (no %s): run `make web`; the API is unaffected", directory)

    @app.get("/", include_in_schema=False)
    def console_not_built() -> HTMLResponse:
        return HTMLResponse(_NOT_BUILT, status_code=503)
