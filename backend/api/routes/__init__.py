"""One router per resource; `backend.api.app` mounts them under /v1."""
