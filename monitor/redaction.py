"""What may be shown of a target's URL: one rule, applied once per target.

:attr:`monitor.config.Target.safe_url` is computed once from :func:`safe_url` and is what logs,
metrics and messages carry; :func:`redact` removes the same secrets from an error text.
"""

from __future__ import annotations

import re

# The userinfo ends at the last "@" before the path: a password may contain "@" itself.
_USERINFO = re.compile(r"^(https?://)([^/?#]*)@")


def redact(text: str, url: str) -> str:
    """``text`` without the URL's credentials (``user:secret@`` becomes ``user:***@``)."""
    match = _USERINFO.match(url)
    if match is None:
        return text
    password = match.group(2).partition(":")[2]
    if password:
        text = text.replace(password, "***")
    return text


def safe_url(url: str) -> str:
    """The URL as it may be logged and exported: the password replaced by ``***``."""
    return _USERINFO.sub(
        lambda m: (
            f"{m.group(1)}{m.group(2).partition(':')[0]}:***@" if ":" in m.group(2) else m.group(0)
        ),
        url,
    )
