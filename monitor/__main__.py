"""``python -m monitor`` is the same as the ``uptime-monitor`` command."""

from __future__ import annotations

from monitor.cli import main

raise SystemExit(main())
