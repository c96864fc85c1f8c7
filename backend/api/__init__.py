"""The backend's HTTP API (FastAPI, versioned under /v1)."""

from backend.api.app import create_app

__all__ = ["create_app"]
