"""``redactor``: one compiled pattern for many texts, the same output as ``redact``."""

from __future__ import annotations

import unicodedata

from editing.fingerprint import REDACTED, redact, redactor


def test_redactor_matches_redact_and_prefers_longer_secrets() -> None:
    secrets = ["555-0199", "555-0199-7731", "", "Zoë Ünal"]
    clean = redactor(secrets)
    texts = [
        "call 555-0199-7731 or 555-0199",
        "nothing here",
        unicodedata.normalize("NFD", "mail Zoë Ünal"),
    ]
    for text in texts:
        assert clean(text) == redact(text, secrets)
    assert clean(texts[0]) == f"call {REDACTED} or {REDACTED}"
    assert "Zo" not in clean(texts[2])
    assert redactor([])("555-0199") == "555-0199" == redactor([""])("555-0199")
