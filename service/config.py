"""Service settings: one :class:`Settings`, read from ``FEATUREEDIT_*`` environment variables.

Every field can be set by the environment variable ``FEATUREEDIT_<FIELD>`` (upper case), e.g.
``FEATUREEDIT_MAX_FACTS=20``; the Redis URL also from ``REDIS_URL`` and its password (and ACL user)
from ``FEATUREEDIT_REDIS_PASSWORD``/``REDIS_PASSWORD`` (``..._REDIS_USERNAME``/``REDIS_USERNAME``),
which are put into the URL when it names none (a Kubernetes Secret or compose ``.env`` can then
hold the password alone). ``rediss://`` URLs connect over TLS (``?ssl_ca_certs=/path/ca.pem``
names a private CA; see docs/security.md). Secrets (the request-blob key,
the callback signing secret) are ``SecretStr``; when unset, a random key is generated once under
``$FEATUREEDIT_HOME/keys/`` (mode 0600) and shared by every process that uses the same home.
The client commands' settings (``FEATUREEDIT_URL``, ``FEATUREEDIT_API_KEY``) are
:class:`ClientSettings`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from editing import settings as library_settings

QUEUE_CLASS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REDIS_URL_VARIABLES: tuple[str, ...] = ("FEATUREEDIT_REDIS_URL", "REDIS_URL")  # first set wins
REDIS_PASSWORD_VARIABLES: tuple[str, ...] = ("FEATUREEDIT_REDIS_PASSWORD", "REDIS_PASSWORD")
REDIS_USERNAME_VARIABLES: tuple[str, ...] = ("FEATUREEDIT_REDIS_USERNAME", "REDIS_USERNAME")


def _default_home() -> Path:
    return library_settings.home(create=False)


CALLBACK_SECRET_ENV = "FEATUREEDIT_CALLBACK_SECRET"


def callback_secret_from_env() -> str | None:
    """``FEATUREEDIT_CALLBACK_SECRET`` as set, or None when unset or empty."""
    return os.environ.get(CALLBACK_SECRET_ENV) or None


def _first_env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[v] for v in names if os.environ.get(v)), None)


def redis_url_with_credentials(url: str, password: str | None, username: str | None = None) -> str:
    """``url`` with ``username``/``password`` put in, unless it already names a password."""
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(username or parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def explicit_redis_url() -> str | None:
    """The Redis URL the environment names (``FEATUREEDIT_REDIS_URL``, else ``REDIS_URL``; with
    the password of ``REDIS_PASSWORD`` put in), or None when neither is set (``featureedit serve``
    then finds or starts a local Redis)."""
    url = _first_env(REDIS_URL_VARIABLES)
    if url is None:
        return None
    return redis_url_with_credentials(
        url, _first_env(REDIS_PASSWORD_VARIABLES), _first_env(REDIS_USERNAME_VARIABLES)
    )


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
    store_backend: Literal["filesystem", "s3"] = Field(
        default="filesystem",
        description="Where records, reports and checkpoints live: 'filesystem' (store_root, "
        "shared by every API and worker process) or 's3' (an S3-compatible bucket).",
    )
    s3_bucket: str | None = Field(default=None, description="S3 bucket (store_backend=s3).")
    s3_prefix: str = Field(default="featureedit", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint for MinIO/Ceph/moto (e.g. http://minio:9000); unset for AWS. "
        "Credentials: the standard AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or role.",
    )
    s3_region: str | None = Field(default=None, description="S3 region (e.g. eu-west-1).")
    s3_cache_dir: Path | None = Field(
        default=None,
        description="Local staging and checkpoint cache of the S3 store (default <home>/s3-cache).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        repr=False,  # may hold the password
        validation_alias=AliasChoices(*REDIS_URL_VARIABLES),
        description="Redis holding the job queues and the rate-limit counters (redis:// or, "
        "for TLS, rediss://).",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(*REDIS_PASSWORD_VARIABLES),
        description="Redis password (requirepass or the ACL user's), put into redis_url when the "
        "URL names none.",
    )
    redis_username: str | None = Field(
        default=None,
        validation_alias=AliasChoices(*REDIS_USERNAME_VARIABLES),
        description="Redis ACL user of redis_password (default: the 'default' user).",
    )
    redis_prefix: str = Field(
        default="featureedit", description="Prefix of the service's own Redis keys."
    )
    queue_prefix: str = Field(
        default="featureedit", description="Queue of a model: '<queue_prefix>-<model_id>'."
    )
    queue_classes: dict[str, str] = Field(
        default_factory=dict,
        description='Model id -> queue (GPU) class, e.g. {"gemma-2-2b": "gpu-24g"} (JSON in '
        "the environment): the model's jobs go to '<queue_prefix>-<class>', which only "
        "workers that can hold such models read. Models not named keep their own queue.",
    )

    # request limits
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Request body cap (413).")
    max_facts: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Facts per request (422); above chunk_facts a request is split into chunks.",
    )
    rate_limit_window: int = Field(default=10, ge=1, description="Rate-limit window, seconds.")
    rate_limit_write: int = Field(
        default=60, ge=1, description="POST/DELETE requests per tenant per window (429)."
    )
    rate_limit_read: int = Field(
        default=1200, ge=1, description="GET requests per tenant per window (429)."
    )

    max_header_bytes: int = Field(
        default=16384,
        ge=1024,
        description="Cap on the request line's target plus all headers, bytes (431), checked "
        "before authentication.",
    )

    # fairness between tenants (429 with Retry-After when exceeded)
    tenant_max_jobs: int = Field(
        default=20, ge=1, description="Erasures one tenant may have queued or running at once."
    )
    tenant_max_facts: int = Field(
        default=500,
        ge=1,
        description="Facts one tenant may have in its queued or running erasures at once.",
    )
    tenant_max_streams: int = Field(
        default=10, ge=1, description="Event streams one tenant may hold open at once."
    )
    tenant_retry_after: int = Field(
        default=30, ge=1, description="Retry-After (seconds) of a tenant over its quota."
    )
    report_cache_entries: int = Field(
        default=64,
        ge=0,
        description="Rendered HTML/PDF reports kept in memory per API process, by content hash "
        "(0: render on every read).",
    )

    # jobs
    publish_mode: Literal["full", "delta"] = Field(
        default="full",
        description="What an accepted erasure publishes when its request does not say: 'full' "
        "(edited safetensors + forward patch) or 'delta' (the patch alone, a few MB for a "
        "multi-GB model). Neither holds a pre-edit value or a subject name.",
    )
    private_retention: Literal["record", "none"] = Field(
        default="record",
        description="How long the operator's private erasure data (revert values, subject names; "
        "sealed with the service key, never downloadable) is kept: 'record' (as long as the "
        "erasure record, until `featureedit private delete`) or 'none' (deleted as soon as the "
        "erasure ends: such an erasure cannot be rolled back).",
    )
    job_timeout: int = Field(default=1800, ge=1, description="rq job_timeout, seconds.")
    chunk_facts: int = Field(
        default=100,
        ge=0,
        description="A request of more facts than this is split into chunks of at most this many "
        "facts, located and edited by several workers in parallel and merged into one edit that "
        "is evaluated and published once (0: never split).",
    )
    job_retries: int = Field(default=2, ge=0, description="rq Retry(max=...).")
    job_retry_intervals: list[int] = Field(
        default_factory=lambda: [5, 30], description="rq Retry(interval=...), seconds."
    )
    publish_stale_seconds: float = Field(
        default=300,
        gt=0,
        description="A '.publish-*' directory, temporary file or unowned checkpoint left in "
        "the store untouched this long belongs to no live job: workers sweep it at start and "
        "on their maintenance timer.",
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
        default=None,
        description="Base URL for links in responses (https://api.example.com). Required when "
        "the API listens on anything but loopback; on loopback the default is the address the "
        "server listens on (never the client's Host header).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token /metrics requires. Unset: /metrics answers loopback clients "
        "only (404 to others).",
    )

    @field_validator("queue_classes")
    @classmethod
    def _check_queue_classes(cls, value: dict[str, str]) -> dict[str, str]:
        for model_id, name in value.items():
            if not QUEUE_CLASS_RE.fullmatch(name):
                raise ValueError(
                    f"queue class {name!r} of model {model_id!r}: use letters, digits, '.', '_' "
                    "and '-' (at most 64 characters), e.g. 'gpu-24g'"
                )
        return value

    @model_validator(mode="after")
    def _redis_credentials(self) -> Settings:
        if self.redis_password is not None:
            self.redis_url = redis_url_with_credentials(
                self.redis_url, self.redis_password.get_secret_value(), self.redis_username
            )
        return self

    @model_validator(mode="after")
    def _check_s3(self) -> Settings:
        if self.store_backend == "s3" and not self.s3_bucket:
            raise ValueError(
                "FEATUREEDIT_STORE_BACKEND=s3 needs FEATUREEDIT_S3_BUCKET (the bucket name)"
            )
        return self

    def check_bind(self, host: str) -> None:
        """Raise ValueError (saying what to set) if the API would listen on ``host``, not a
        loopback address, without ``public_url``: links would otherwise echo a client's Host."""
        if self.public_url is None and not is_loopback_host(host):
            raise ValueError(
                f"the API listens on {host!r} (not loopback) but FEATUREEDIT_PUBLIC_URL is not "
                "set: set it to the URL clients use (e.g. https://featureedit.example.com), so "
                "links in responses never come from a client's Host header"
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

    def queue_class(self, model_id: str) -> str | None:
        """The queue (GPU) class ``model_id`` is assigned to in ``queue_classes``, or None."""
        return self.queue_classes.get(model_id)

    def queue_name(self, model_id: str) -> str:
        """The rq queue that serves ``model_id``: its class's queue if it has one
        (``<queue_prefix>-<class>``), else its own (``<queue_prefix>-<model_id>``)."""
        return f"{self.queue_prefix}-{self.queue_class(model_id) or model_id}"

    def class_queue_name(self, queue_class: str) -> str:
        """The rq queue of a queue class, ``<queue_prefix>-<class>``."""
        return f"{self.queue_prefix}-{queue_class}"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names only this machine."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ClientSettings(BaseSettings):
    """Settings of the client commands (``featureedit submit``, ``status``...)."""

    model_config = SettingsConfigDict(env_prefix="FEATUREEDIT_", extra="ignore")

    url: str | None = Field(default=None, description="The service's base URL.")
    api_key: SecretStr | None = Field(default=None, description="The tenant's API key.")
