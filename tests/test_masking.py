"""What jobwrap shows of a request and its secrets (jobwrap.net.masking, PreparedCall.describe)."""

from __future__ import annotations

import urllib.parse

import pytest

from jobwrap.net.masking import mask_secret, safe_url, scrub
from jobwrap.net.message import PreparedCall

SECRET = "0123456789abcdef0123456789abcdef"


# Dry-run rendering ---------------------------------------------------------------------------


def test_describe_masks_secrets_and_pretty_prints_the_body():
    call = PreparedCall(
        "POST",
        "https://user:pw@idlemon.example/api/monitors/x/logs?q=1",
        {"Content-Type": "application/json", "Api-Token": SECRET},
        {"duration": 7, "metas": []},
    )
    text = call.describe()
    assert text.splitlines()[:3] == [
        "POST https://idlemon.example/api/monitors/x/logs",
        "Content-Type: application/json",
        "Api-Token: 0123…cdef",
    ]
    assert '{\n  "duration": 7,\n  "metas": []\n}' in text
    assert SECRET not in text and "pw" not in text
    assert SECRET in call.describe(masked=False)


def test_describe_keeps_the_auth_scheme_and_has_no_body_section_without_body():
    call = PreparedCall("GET", "https://pm.example/api/v1/monitors", {"Authorization": "Bearer k"})
    assert call.describe() == "GET https://pm.example/api/v1/monitors\nAuthorization: Bearer ****"


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        (SECRET, "0123…cdef"),
        ("pm_live_4f9c2a7d1e3b5c8a6f0d", "pm_l…6f0d"),
        ("short-token", "****"),
        ("x" * 23, "****"),
        ("", "****"),
    ],
)
def test_mask_secret(secret, shown):
    assert mask_secret(secret) == shown


def test_safe_url_drops_credentials_query_and_fragment():
    assert safe_url("https://u:p@h.example:8443/a/b?token=1#f") == "https://h.example:8443/a/b"



# Echoed secrets (issue 9, item 17) -----------------------------------------------------------


def test_scrub_covers_every_form():
    text = f"{SECRET.upper()} {urllib.parse.quote_plus('a b' + SECRET)} {SECRET}"
    assert scrub(text, (SECRET,)).count("[redacted]") == 3
