"""Tests of editing.fingerprint: finding a secret in every written form in a directory,
redaction, keyed fingerprints and where their key comes from (no model needed)."""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from pathlib import Path

import pytest

from editing import fingerprint as fp
from editing.checkpoints import assert_no_secrets
from editing.errors import ConfigError

SECRET = "555-0199"


def test_find_secrets_in_dir_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = ["José Ruiz", "call 555 0199", "never there"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "raw.txt").write_bytes("x José Ruiz y".encode())
    (tmp_path / "escaped.json").write_text(json.dumps({"v": "José Ruiz"}))  # "Jos\u00e9 Ruiz"
    (tmp_path / "sub" / "vocab.json").write_text(
        json.dumps({"callĠ555Ġ0199": 7}, ensure_ascii=False)
    )
    (tmp_path / "sp.txt").write_text("▁call▁555▁0199")
    decomposed = unicodedata.normalize("NFD", "José Ruiz")
    (tmp_path / "nfd.txt").write_text(decomposed)
    (tmp_path / "clean.bin").write_bytes(bytes(range(256)) * 10)
    monkeypatch.setattr(fp, "_CHUNK", 4)  # secrets straddle read boundaries
    hits = fp.find_secrets_in_dir(tmp_path, secrets)
    assert hits == [
        (tmp_path / "escaped.json", 0),
        (tmp_path / "nfd.txt", 0),
        (tmp_path / "raw.txt", 0),
        (tmp_path / "sp.txt", 1),
        (tmp_path / "sub" / "vocab.json", 1),
    ]
    with pytest.raises(ConfigError) as info:
        assert_no_secrets(tmp_path, secrets)
    assert "José" not in str(info.value) and "0199" not in str(info.value)
    with pytest.raises(ConfigError, match="empty"):
        fp.find_secrets_in_dir(tmp_path, [""])


def test_redact_longest_first() -> None:
    text = "call 555-0199 or 555, mail a@b.org"
    assert fp.redact(text, ["555", "555-0199", "a@b.org", ""]) == (
        "call [REDACTED] or [REDACTED], mail [REDACTED]"
    )
    assert fp.redact(text, []) == text


def test_fingerprint_keyed_and_stable() -> None:
    a = fp.fingerprint(SECRET, key=b"key-a")
    assert a == fp.fingerprint(SECRET, key=b"key-a")
    assert a != fp.fingerprint(SECRET, key=b"key-b")
    assert a != fp.fingerprint("555-0198", key=b"key-a")
    assert a.startswith("hmac-sha256:") and len(a) == len("hmac-sha256:") + 64
    assert SECRET not in a and "0199" not in a
    composed, decomposed = "José", unicodedata.normalize("NFD", "José")
    assert composed != decomposed
    assert fp.fingerprint(composed, key=b"k") == fp.fingerprint(decomposed, key=b"k")


def test_fingerprint_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREEDIT_HOME", str(tmp_path))
    monkeypatch.delenv("FEATUREEDIT_FINGERPRINT_KEY", raising=False)
    key = fp.fingerprint_key()
    key_file = tmp_path / "keys" / "fingerprint.key"
    assert len(key) == 32 and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert fp.fingerprint_key() == key  # generated once
    assert fp.fingerprint(SECRET) == fp.fingerprint(SECRET, key=key)

    monkeypatch.setenv("FEATUREEDIT_FINGERPRINT_KEY", "00ff10")
    assert fp.fingerprint_key() == b"\x00\xff\x10"
    monkeypatch.setenv("FEATUREEDIT_FINGERPRINT_KEY", "a text key")
    assert fp.fingerprint_key() == b"a text key"
    assert fp.fingerprint(SECRET) == fp.fingerprint(SECRET, key=b"a text key")

    monkeypatch.delenv("FEATUREEDIT_FINGERPRINT_KEY")
    key_file.write_text("garbage\n")
    with pytest.raises(ConfigError, match="malformed"):
        fp.fingerprint_key()
