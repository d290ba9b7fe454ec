"""What may be shown of a target's URL: one rule, applied once per target.

:attr:`monitor.config.Target.safe_url` is computed once from :func:`safe_url` and is what logs,
metrics and messages carry; :func:`redact` removes the same secrets from an error text.

Hidden, whatever the scheme's case (``HTTP://`` too):

- the password of the user info (``user:secret@`` → ``user:***@``);
- a user name without a password, which is how tokens ride in URLs (``TOKEN@host`` →
  ``***@host``);
- the value of every query parameter named in :data:`SECRET_QUERY_KEYS`, in any case
  (``?token=abc`` → ``?token=***``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

# Query parameters whose values are credentials (compared in lower case).
SECRET_QUERY_KEYS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "key",
        "passwd",
        "password",
        "private_token",
        "secret",
        "sig",
        "signature",
        "token",
    }
)
MASK = "***"
MIN_REDACTED = 4  # characters: see _secrets

# The user info ends at the last "@" before the path: a password may contain "@" itself.
_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://)([^/?#]*)@")
_QUERY_PAIR = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def _secrets(url: str) -> list[str]:
    """Every secret ``url`` carries, as it appears in the URL and decoded."""
    found: list[str] = []
    match = _USERINFO.match(url)
    if match is not None:
        user, colon, password = match.group(2).partition(":")
        found.append(password if colon else user)
    query = url.partition("?")[2].partition("#")[0]
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key.lower() in SECRET_QUERY_KEYS:
            found.append(value)
    for pair in _QUERY_PAIR.finditer(url):
        if unquote(pair.group(2)).lower() in SECRET_QUERY_KEYS:
            found.append(pair.group(3))
    out: list[str] = []
    for secret in found:
        for form in (secret, unquote(secret)):
            # Shorter ones would mangle the text (a password "1" in "127.0.0.1"); the URL
            # itself is always shown through safe_url, which masks them whatever their size.
            if len(form) >= MIN_REDACTED and form not in out:
                out.append(form)
    # Longest first: a secret that contains another is replaced whole.
    return sorted(out, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """``text`` without any secret of ``url`` (see the module docstring)."""
    for secret in _secrets(url):
        text = text.replace(secret, MASK)
    return text


def safe_url(url: str) -> str:
    """The URL as it may be logged and exported: every secret replaced by ``***``."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _password = match.group(2).partition(":")
        return f"{match.group(1)}{user}:{MASK}@" if colon else f"{match.group(1)}{MASK}@"

    def pair(match: re.Match[str]) -> str:
        if unquote(match.group(2)).lower() in SECRET_QUERY_KEYS and match.group(3):
            return f"{match.group(1)}{match.group(2)}={MASK}"
        return match.group(0)

    head, hash_, fragment = url.partition("#")
    head = _USERINFO.sub(userinfo, head, count=1)
    if "?" in head:
        path, _, query = head.partition("?")
        head = path + _QUERY_PAIR.sub(pair, "?" + query)
    return head + hash_ + fragment
