"""Hostile input to the loader (:mod:`monitor.loader`): what it refuses, bounded. The ordinary
file format and its messages are in test_config.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor import cli, loader
from monitor.loader import ConfigError, load_config

ONE_TARGET = """\
targets:
  - name: web
    url: https://example.com/
"""


class TestFileLimits:
    def test_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """A FIFO is not read (opening one to read would wait for a writer)."""
        path = tmp_path / "m.yaml"
        os.mkfifo(path)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [f"{path}: cannot read: it is a FIFO, not a regular file"]

    def test_device_is_refused(self) -> None:
        """/dev/zero (endless) is refused as a character device, not read."""
        with pytest.raises(ConfigError) as info:
            load_config("/dev/zero", environ={})
        assert info.value.problems == [
            "/dev/zero: cannot read: it is a character device, not a regular file"
        ]

    def test_file_over_the_limit_is_refused_before_reading(self, tmp_path: Path) -> None:
        """A 100 MB file (sparse: no disk used) is refused by its size alone."""
        path = tmp_path / "m.yaml"
        with path.open("wb") as file:
            file.truncate(100 * 1000 * 1000)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [f"{path}: cannot read: it is larger than 32 MiB"]

    def test_file_at_the_limit_is_read(self, tmp_path: Path) -> None:
        """Exactly 32 MiB is still read (here: a comment after a good target list)."""
        path = tmp_path / "m.yaml"
        head = ONE_TARGET.encode() + b"#"
        path.write_bytes(head + b"x" * (32 * 1024 * 1024 - len(head)))
        assert [t.name for t in load_config(path, environ={}).targets] == ["web"]

    def test_reads_at_most_the_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file whose size says 0 (as /proc files do) is read only up to the limit."""
        monkeypatch.setattr(loader, "MAX_FILE_BYTES", 100)
        assert os.stat("/proc/self/status").st_size == 0
        with pytest.raises(ConfigError) as info:
            load_config("/proc/self/status", environ={})
        assert info.value.problems == [
            "/proc/self/status: cannot read: it is larger than 100 bytes"
        ]


class TestCommandLine:
    def test_validate_on_dev_zero(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`validate -c /dev/zero` answers at once with exit 2."""
        assert cli.main(["validate", "-c", "/dev/zero"]) == 2
        assert capsys.readouterr() == (
            "",
            "/dev/zero: cannot read: it is a character device, not a regular file\n",
        )
