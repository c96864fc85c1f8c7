# One image for every Python role of the stack (backend, verifier, node agent, deploy job).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cvm cvm
COPY backend backend
COPY node_agent node_agent
COPY devstack devstack
COPY contracts/out contracts/out
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/cvm --create-home cvm
USER cvm
WORKDIR /var/lib/cvm
ENTRYPOINT ["cvm"]
