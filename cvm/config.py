"""The one settings object of cvm, read from the environment (prefix CVM_) and a settings file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration shared by the CLI, the backend and the node agent.

    Every field can be set as an environment variable `CVM_<FIELD>` or in the settings
    file named by `CVM_SETTINGS_FILE` (default `cvm.env` in the working directory).
    """

    model_config = SettingsConfigDict(env_prefix="CVM_", env_file="cvm.env", extra="ignore")

    # --- chain -------------------------------------------------------------------
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC endpoint of the chain")
    deployment_file: Path = Field(
        Path(".cvm/deployment.json"),
        description="deployment record: chain id, RPC and API URLs, contract addresses",
    )
    data_dir: Path = Field(Path(".cvm"), description="local state: keystores, caches, logs")


def get_settings() -> Settings:
    """Read the settings afresh (cheap; callers that need a stable view keep the result)."""
    return Settings()
