"""Storage of a year of history: the SQLite file's size (and PostgreSQL's tables') at N targets.

Writes, through the store as the daemon does, what the default retention keeps after a year:
hourly rollups of the last 90 days, a daily rollup of each of the 365 days (the older days'
hourly rows written and then pruned, as the daemon's pruning would), and ~2 incidents per
target and month opened and closed through record_many. Prints the rows and the sizes.

    python tests/bench/bench_history.py --targets 1000 10000
    python tests/bench/bench_history.py --targets 1000 --postgres postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from monitor.history import BUCKET_COUNT, DAY_S, HOUR_S, Rollup
from monitor.state import TargetState
from monitor.stores import StateStore, Subject, open_store
from monitor.stores.base import Decision, Record

DAYS, HOURLY_DAYS = 365, 90
INCIDENTS_PER_MONTH = 2
END = int(time.time()) // DAY_S * DAY_S
BATCH = 20_000


def rollup(target: str, start: int, checks: int, rng: random.Random) -> Rollup:
    """``checks`` checks of a target answering in ~50-400 ms, a failure now and then."""
    failures = 1 if rng.random() < 0.05 else 0
    passing = checks - failures
    spread = [passing // 2, passing // 4, passing - passing // 2 - passing // 4]
    buckets = (0, spread[0], spread[1], spread[2]) + (0,) * (BUCKET_COUNT - 4)
    return Rollup(target, "default", start, checks, failures, passing * 0.15, 0.45, buckets, start)


def fixed(state: TargetState):
    return lambda _view: Decision(state)


async def write(store: StateStore, targets: int) -> None:
    rng = random.Random(1)
    names = [f"target-{i:05d}" for i in range(targets)]
    first = END - DAYS * DAY_S
    pending: list[Rollup] = []

    async def add(r: Rollup) -> None:
        pending.append(r)
        if len(pending) >= BATCH:
            await store.add_rollups(pending)
            pending.clear()

    for day in range(DAYS):
        start = first + day * DAY_S
        hourly = start >= END - HOURLY_DAYS * DAY_S
        for name in names:
            if hourly:
                for hour in range(24):
                    await add(rollup(name, start + hour * HOUR_S, 60, rng))
            else:  # one row makes the day's; its hourly row is pruned below
                await add(rollup(name, start, 1440, rng))
    await store.add_rollups(pending)
    records = []
    for name in names:
        subject = Subject(name, f"https://{name}.example/", {}, ())
        for n in range(DAYS * INCIDENTS_PER_MONTH // 30):
            at = first + rng.uniform(n, n + 1) * DAY_S * 30 / INCIDENTS_PER_MONTH
            down = TargetState("down", at, "status", "HTTP 503", f"{name}/{int(at * 1000)}", at)
            up = TargetState("up", at + rng.uniform(60, 1800), "ok")
            records += [Record(subject, "default", s, fixed(s)) for s in (down, up)]
    for i in range(0, len(records), 500):
        await store.record_many(records[i : i + 500])
    now = float(END)
    while await store.prune_history(now - HOURLY_DAYS * DAY_S - HOUR_S, 0, 0, 50_000):
        pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--postgres", help="also on this (empty) database, at the first N")
    args = parser.parse_args()
    for targets in args.targets:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "state.db"
            started = time.perf_counter()
            await write(await open_store(str(path)), targets)
            store = await open_store(str(path))
            await store.close()
            db = sqlite3.connect(path)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            counts = {
                table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("history_hourly", "history_daily", "history_incident")
            }
            db.close()
            size = path.stat().st_size
            print(
                f"SQLite, {targets:,} targets, a year: {size / 2**20:,.0f} MiB"
                f" ({size / targets / 2**10:,.0f} KiB per target);"
                f" rows {counts}; written in {time.perf_counter() - started:.0f} s"
            )
    if args.postgres:
        store = await open_store(args.postgres)
        await write(store, args.targets[0])
        await store.close()
        import psycopg

        async with await psycopg.AsyncConnection.connect(args.postgres) as conn:
            cur = await conn.execute(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
                " WHERE relname LIKE 'history_%' AND relkind = 'r' ORDER BY relname"
            )
            sizes = {name: f"{size / 2**20:,.0f} MiB" for name, size in await cur.fetchall()}
        print(f"PostgreSQL, {args.targets[0]:,} targets, a year: {sizes}")


if __name__ == "__main__":
    asyncio.run(main())
