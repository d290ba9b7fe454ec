"""What may be shown of a target's URL: one rule, applied once per target.

:attr:`monitor.config.Target.safe_url` is computed once from :func:`safe_url` and is what logs,
metrics and messages carry; :func:`redact` removes the same secrets from an error text (a
target finds its secrets once, :attr:`monitor.config.Target.secrets`, and masks each error
with :func:`mask`).

Hidden, whatever the scheme's case (``HTTP://`` too):

- the password of the user info (``user:secret@`` → ``user:***@``);
- a user name without a password, which is how tokens ride in URLs (``TOKEN@host`` →
  ``***@host``);
- the value of every query parameter named in :data:`SECRET_QUERY_KEYS`, in any case
  (``?token=abc`` → ``?token=***``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://)([^/?#]*)@")
_QUERY_PAIR = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def secrets_of(*urls: str) -> tuple[str, ...]:
    """Every secret the ``urls`` carry, as they appear and decoded, longest first."""
    return tuple(sorted({s for url in urls for s in _secrets(url)}, key=len, reverse=True))


def _secrets(url: str) -> list[str]:
    """Every secret ``url`` carries, as it appears in the URL and decoded."""
    found: list[str] = []
    match = USERINFO.match(url)
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
    return mask(text, _secrets(url))


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each of ``secrets`` (longest first) replaced by the mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def mask_url(
    url: str,
    *,
    user_is_secret: bool,
    pairs: re.Pattern[str],
    is_secret: Callable[[str, str], bool],
) -> str:
    """``url`` with ``***`` for the password of its user info (and the user itself when
    ``user_is_secret``: a token given as the user) and for the value of every query pair of
    ``pairs`` (groups: separator, key, value) that ``is_secret(decoded lower-case key,
    value)``. The one way URLs are masked: targets' (:func:`safe_url`) and databases'
    (:func:`monitor.stores.dsn.redacted`) differ only in these rules."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _password = match.group(2).partition(":")
        if colon:
            return f"{match.group(1)}{user}:{MASK}@"
        return f"{match.group(1)}{MASK if user_is_secret else user}@"

    def pair(match: re.Match[str]) -> str:
        if is_secret(unquote(match.group(2)).lower(), match.group(3)):
            return f"{match.group(1)}{match.group(2)}={MASK}"
        return match.group(0)

    head, hash_, fragment = url.partition("#")
    head = USERINFO.sub(userinfo, head, count=1)
    if "?" in head:
        path, _, query = head.partition("?")
        head = path + pairs.sub(pair, "?" + query)
    return head + hash_ + fragment


def safe_url(url: str) -> str:
    """The URL as it may be logged and exported: every secret replaced by ``***``."""
    return mask_url(
        url,
        user_is_secret=True,
        pairs=_QUERY_PAIR,
        is_secret=lambda key, value: key in SECRET_QUERY_KEYS and bool(value),
    )
