"""The state setting as text: which backend it names and how a PostgreSQL URL is shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.stores import is_postgres_url, redacted
from monitor.stores.dsn import secrets, without_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://monitor@/db?host=/run/pg", "postgresql://monitor@/db?host=/run/pg"),
        ("postgresql://monitor:pw@db1:5432/db", "postgresql://monitor:***@db1:5432/db"),
        ("postgres://monitor:p%40ss@db1,db2:5433/db", "postgres://monitor:***@db1,db2:5433/db"),
        ("postgresql://m:a@b@db/x", "postgresql://m:***@db/x"),  # an "@" in the password
        (
            "postgresql://db/x?user=m&password=pw&sslmode=require&sslpassword=key",
            "postgresql://db/x?user=m&password=***&sslmode=require&sslpassword=***",
        ),
        ("POSTGRESQL://m:pw@db/x?PassWord=pw", "POSTGRESQL://m:***@db/x?PassWord=***"),
        ("postgresql://", "postgresql://"),
    ],
)
def test_redacted_hides_passwords_only(url: str, shown: str) -> None:
    """The user info's password and the password parameters become ***; users, hosts,
    ports, database and other parameters stay."""
    assert redacted(url) == shown


def test_secrets_are_found_as_written_and_decoded() -> None:
    """secrets() lists each password as written and percent-decoded, longest first."""
    url = "postgresql://m:p%40ss-word@db/x?password=other-pw&sslpassword=k"
    assert secrets(url) == ["p%40ss-word", "p@ss-word", "other-pw", "k"]


def test_without_secrets_cleans_an_error_text() -> None:
    """An error quoting the URL gets it redacted; a password of four characters or more is
    masked wherever else it appears, decoded too."""
    url = "postgresql://m:p%40ss-word@db/x?password=other-pw"
    text = f'bad URI: "{url}" (p@ss-word, other-pw, p%40ss-word)'
    assert without_secrets(text, url) == (
        'bad URI: "postgresql://m:***@db/x?password=***" (***, ***, ***)'
    )


@pytest.mark.parametrize(
    ("setting", "postgres"),
    [
        ("postgresql://db/x", True),
        ("postgres://db/x", True),
        ("PostgreSQL://db/x", True),
        ("monitor-state.db", False),
        ("/var/lib/postgresql/state.db", False),
        ("postgresql:/db", False),
    ],
)
def test_is_postgres_url(setting: str, postgres: bool) -> None:
    """Only a postgresql:// or postgres:// URL (any case) names PostgreSQL."""
    assert is_postgres_url(setting) is postgres


@pytest.mark.slow
def test_a_file_setting_does_not_import_psycopg(tmp_path: Path) -> None:
    """Opening a SQLite file through open_store leaves psycopg unimported (start-up time)."""
    code = (
        "import asyncio, sys\n"
        "from monitor.stores import open_store\n"
        "async def main():\n"
        "    store = await open_store(sys.argv[1])\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "state.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")
