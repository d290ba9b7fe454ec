"""The state setting as text: which backend it names, and how it may be shown.

No database driver is imported here: the CLI reads the setting before it knows whether it
needs one (start-up time).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from monitor.redaction import MASK, MIN_REDACTED

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# libpq's query parameters that hold a secret (the URL's own password is in the user info).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})

# The user info ends at the last "@" before the path: a password may contain "@" itself.
_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://)([^/?#]*)@")
_QUERY_PAIR = re.compile(r"([?&])([^=&#]*)=([^&#]*)")


def is_postgres_url(setting: str) -> bool:
    """Whether a state setting names a PostgreSQL database (any case of the scheme)."""
    return setting.lower().startswith(POSTGRES_SCHEMES)


def redacted(url: str) -> str:
    """A PostgreSQL URL as it may be logged: its passwords replaced by ``***``.

    The user, hosts, database and other parameters stay: they say which database is meant
    and are no secret. ``postgresql://monitor:pw@db1,db2/monitor?password=pw&sslmode=require``
    → ``postgresql://monitor:***@db1,db2/monitor?password=***&sslmode=require``.
    """

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _password = match.group(2).partition(":")
        return f"{match.group(1)}{user}{':' + MASK if colon else ''}@"

    def pair(match: re.Match[str]) -> str:
        if unquote(match.group(2)).lower() in SECRET_PARAMETERS:
            return f"{match.group(1)}{match.group(2)}={MASK}"
        return match.group(0)

    head, hash_, fragment = url.partition("#")
    head = _USERINFO.sub(userinfo, head, count=1)
    if "?" in head:
        path, _, query = head.partition("?")
        head = path + _QUERY_PAIR.sub(pair, "?" + query)
    return head + hash_ + fragment


def secrets(url: str) -> list[str]:
    """The passwords ``url`` carries (user info, ``password=``, ``sslpassword=``), as written
    and decoded, longest first."""
    found: list[str] = []
    match = _USERINFO.match(url)
    if match is not None and ":" in match.group(2):
        found.append(match.group(2).partition(":")[2])
    query = url.partition("#")[0].partition("?")[2]
    found += [
        pair.group(3)
        for pair in _QUERY_PAIR.finditer("?" + query)
        if unquote(pair.group(2)).lower() in SECRET_PARAMETERS
    ]
    forms = {form for secret in found for form in (secret, unquote(secret)) if form}
    return sorted(forms, key=len, reverse=True)


def without_secrets(text: str, url: str) -> str:
    """``text`` (an error about ``url``) with the URL redacted and no password of it left.

    A password shorter than four characters is only hidden where the URL is quoted whole:
    replacing it everywhere would mangle the text (a password "1" in "127.0.0.1").
    """
    text = text.replace(url, redacted(url))
    for secret in secrets(url):
        if len(secret) >= MIN_REDACTED:
            text = text.replace(secret, MASK)
    return text
