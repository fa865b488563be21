"""Secrets in what jobwrap shows: masked in request dumps, scrubbed from messages and bodies.

A token may come back from a server in any case or encoding (echoed in an error message, a
Location, a URL path): :func:`scrub` removes every form of it.  Nothing here imports requests.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

# Request headers whose values are secrets: masked by describe(), scrubbed from error messages.
SECRET_HEADERS = frozenset(
    {"api-token", "authorization", "proxy-authorization", "cookie", "x-api-key"}
)


def mask_secret(secret: str) -> str:
    """``0123…cdef`` for a long secret; ``****`` when showing 8 characters would reveal too much."""
    if len(secret) < 24:  # from 24 characters on, 8 shown characters are at most a third
        return "****"
    return f"{secret[:4]}…{secret[-4:]}"


def mask_header(name: str, value: str) -> str:
    """``value`` with its secret masked when ``name`` is a secret header; keeps ``Bearer``."""
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, space, credential = value.partition(" ")
    if space and credential:
        return f"{scheme} {mask_secret(credential)}"
    return mask_secret(value)


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to show in messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every form of each secret replaced by ``[redacted]``.

    Case-insensitive (a server may echo a token upper-cased), and the percent-encoded forms
    too (a token echoed in a Location or a URL path).
    """
    pattern = _secret_pattern(secrets)
    return text if pattern is None else pattern.sub("[redacted]", text)


def scrub_json(value: Any, secrets: tuple[str, ...]) -> Any:
    """A parsed JSON value with :func:`scrub` applied to every string in it, keys included."""
    if _secret_pattern(secrets) is None:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [scrub_json(item, secrets) for item in value]
    if isinstance(value, dict):
        return {scrub(str(k), secrets): scrub_json(v, secrets) for k, v in value.items()}
    return value


def _secret_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < 4:  # too short to tell from ordinary text; never a real token
            continue
        forms |= {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
                  json.dumps(secret)[1:-1]}
    if not forms:
        return None
    ordered = sorted(forms, key=len, reverse=True)  # the longest form first
    return re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)


def secrets_of(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The secret values among ``headers``: whole values, and the credential after a scheme."""
    found = []
    for name, value in headers.items():
        if name.lower() in SECRET_HEADERS and value:
            found.append(value)
            credential = value.partition(" ")[2]
            if credential:
                found.append(credential)
    return tuple(found)
