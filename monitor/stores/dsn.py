"""The state setting as text: which backend it names, and how it may be shown.

No database driver is imported here: the CLI reads the setting before it knows whether it
needs one (start-up time).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from monitor.redaction import MASK, MIN_REDACTED, USERINFO, mask_url

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# libpq's query parameters that hold a secret (the URL's own password is in the user info).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})

# The user info ends at the last "@" before the path: a password may contain "@" itself.
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

    return mask_url(
        url,
        user_is_secret=False,  # a database user is no secret, and says which role is meant
        pairs=_QUERY_PAIR,
        is_secret=lambda key, _value: key in SECRET_PARAMETERS,
    )


def secrets(url: str) -> list[str]:
    """The passwords ``url`` carries (user info, ``password=``, ``sslpassword=``), as written
    and decoded, longest first."""
    found: list[str] = []
    match = USERINFO.match(url)
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
