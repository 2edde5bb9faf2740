"""Service settings: one :class:`Settings`, read from ``FEATUREEDIT_*`` environment variables.

Every field can be set by the environment variable ``FEATUREEDIT_<FIELD>`` (upper case), e.g.
``FEATUREEDIT_MAX_FACTS=20``; the Redis URL also from ``REDIS_URL``. Secrets (the request-blob key,
the callback signing secret) are ``SecretStr``; when unset, a random key is generated once under
``$FEATUREEDIT_HOME/keys/`` (mode 0600) and shared by every process that uses the same home.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    raw = os.environ.get("FEATUREEDIT_HOME") or Path.home() / ".cache" / "featureedit"
    return Path(raw).expanduser()


class Settings(BaseSettings):
    """Configuration of the API process (and of the workers' view of the store and queue)."""

    model_config = SettingsConfigDict(env_prefix="FEATUREEDIT_", extra="ignore")

    # where things live
    home: Path = Field(
        default_factory=_default_home,
        description="featureedit home: keys/, audit/, store/ and the model cache.",
    )
    store_root: Path | None = Field(
        default=None, description="Root of the filesystem store (default <home>/store)."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("FEATUREEDIT_REDIS_URL", "REDIS_URL"),
        description="Redis holding the job queues and the rate-limit counters.",
    )
    redis_prefix: str = Field(
        default="featureedit", description="Prefix of the service's own Redis keys."
    )
    queue_prefix: str = Field(
        default="featureedit", description="Queue of a model: '<queue_prefix>-<model_id>'."
    )

    # request limits
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Request body cap (413).")
    max_facts: int = Field(default=100, ge=1, le=100, description="Facts per request (422).")
    rate_limit_window: int = Field(default=10, ge=1, description="Rate-limit window, seconds.")
    rate_limit_write: int = Field(
        default=60, ge=1, description="POST/DELETE requests per tenant per window (429)."
    )
    rate_limit_read: int = Field(
        default=1200, ge=1, description="GET requests per tenant per window (429)."
    )

    # jobs
    job_timeout: int = Field(default=1800, ge=1, description="rq job_timeout, seconds.")
    job_retries: int = Field(default=2, ge=0, description="rq Retry(max=...).")
    job_retry_intervals: list[int] = Field(
        default_factory=lambda: [5, 30], description="rq Retry(interval=...), seconds."
    )
    result_ttl: int = Field(default=86400, description="rq result_ttl, seconds.")
    failure_ttl: int = Field(default=7 * 86400, description="rq failure_ttl, seconds.")

    # secrets
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) encrypting request blobs (comma-separated: the first "
        "encrypts, all decrypt). Default: generated at <home>/keys/request.key.",
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret signing callback bodies (X-Featureedit-Signature). Default: "
        "generated at <home>/keys/callback.key.",
    )
    callback_allow_private: bool = Field(
        default=False,
        description="Accept callback URLs naming localhost or private IP addresses (dev only).",
    )

    # server-sent events
    sse_poll_interval: float = Field(default=0.3, gt=0, description="Store poll period, s.")
    sse_max_seconds: float = Field(
        default=900, gt=0, description="An event stream ends after this; clients resume."
    )

    # misc
    log_level: str = Field(default="INFO", description="Level of the service's JSON logs.")
    public_url: str | None = Field(
        default=None, description="Base URL for links in responses (default: from the request)."
    )

    @property
    def store_dir(self) -> Path:
        """The filesystem store's root."""
        return self.store_root or self.home / "store"

    @property
    def keys_dir(self) -> Path:
        """Directory of the API-key file and generated secrets."""
        return self.home / "keys"

    @property
    def audit_path(self) -> Path:
        """The append-only audit log."""
        return self.home / "audit" / "audit.log"

    def queue_name(self, model_id: str) -> str:
        """The rq queue that serves ``model_id``."""
        return f"{self.queue_prefix}-{model_id}"
