"""Tests of service.config: where the service's settings come from in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ClientSettings, Settings, explicit_redis_url


def test_explicit_redis_url_prefers_featureedit_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEATUREEDIT_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert explicit_redis_url() is None
    monkeypatch.setenv("REDIS_URL", "redis://b:6379/0")
    assert explicit_redis_url() == "redis://b:6379/0" == Settings().redis_url
    monkeypatch.setenv("FEATUREEDIT_REDIS_URL", "redis://a:6379/0")
    assert explicit_redis_url() == "redis://a:6379/0" == Settings().redis_url


def test_redis_password_goes_into_the_url_and_tls_urls_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REDIS_PASSWORD (a Secret key) joins REDIS_URL (a ConfigMap value); rediss:// is TLS."""
    from redis import Redis
    from redis.connection import SSLConnection

    for name in ("FEATUREEDIT_REDIS_URL", "FEATUREEDIT_REDIS_PASSWORD", "REDIS_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "rediss://featureedit-redis:6380/0?ssl_ca_certs=/ca.pem")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss/word")
    url = Settings().redis_url
    assert url == "rediss://:p%40ss%2Fword@featureedit-redis:6380/0?ssl_ca_certs=/ca.pem"
    assert explicit_redis_url() == url
    pool = Redis.from_url(url).connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "p@ss/word"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    monkeypatch.setenv("REDIS_USERNAME", "featureedit")
    assert Settings().redis_url.startswith("rediss://featureedit:p%40ss%2Fword@")
    # a URL naming its own password keeps it
    monkeypatch.setenv("REDIS_URL", "redis://:inline@r:6379/0")
    assert Settings().redis_url == "redis://:inline@r:6379/0"
    assert "inline" not in repr(Settings())  # the URL may hold a password: not in reprs


def test_client_settings_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEATUREEDIT_URL", raising=False)
    monkeypatch.delenv("FEATUREEDIT_API_KEY", raising=False)
    assert ClientSettings().url is None and ClientSettings().api_key is None
    monkeypatch.setenv("FEATUREEDIT_URL", "http://api:8000")
    monkeypatch.setenv("FEATUREEDIT_API_KEY", "fe_secret")
    client = ClientSettings()
    assert client.url == "http://api:8000"
    assert client.api_key is not None and client.api_key.get_secret_value() == "fe_secret"
    assert "fe_secret" not in repr(client)
    monkeypatch.setenv("FEATUREEDIT_HOME", str(tmp_path / "home"))
    assert Settings().home == tmp_path / "home"
    assert not (tmp_path / "home").exists()  # reading the settings creates nothing
