"""The options of each type of check but HTTP's: one block per type, named after it
(``tcp:``), checked by :mod:`monitor.checktypes` to sit only on targets of that type.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from monitor.configvalues import MAX_REGEX_CHARS, Strict, compile_regex

StartTLS = Literal["smtp", "imap", "pop3"]


class TCP(Strict):
    """What tcp:// and tls:// targets say once connected, and what the reply must match."""

    send: str | None = Field(
        default=None,
        description="text sent once connected (over TLS for tls:// and starttls), e.g. "
        "PING and a line break",
    )
    expect: Annotated[str | None, AfterValidator(compile_regex)] = Field(
        default=None,
        description="regular expression (Python syntax) the reply must match, read up to "
        f"max_body_bytes; at most {MAX_REGEX_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_REGEX_CHARS},
    )
    starttls: StartTLS | None = Field(
        default=None,
        description="tcp:// only: ask this protocol for TLS (smtp, imap, pop3), then verify it "
        "as tls:// does",
    )


class WS(Strict):
    """What ws:// and wss:// targets send once the WebSocket is open, and what a reply
    must match."""

    send: str | None = Field(
        default=None,
        description="text message sent once the WebSocket is open, e.g. a JSON ping",
    )
    expect: Annotated[str | None, AfterValidator(compile_regex)] = Field(
        default=None,
        description="regular expression (Python syntax) a message must match (text as UTF-8, "
        f"binary as it is), read up to max_body_bytes; at most {MAX_REGEX_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_REGEX_CHARS},
    )
