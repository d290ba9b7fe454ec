"""The SQLite store's tables and the statements :mod:`monitor.stores.sqlite` runs on them
(history's and maintenance's are in their own modules). ``CREATE ... IF NOT EXISTS``: a file
of an older version gains what it lacks when it is opened."""

from __future__ import annotations

# A state, as the fleet's row of a target and as a location's verdict hold it.
_STATE_COLUMNS = """
    state TEXT NOT NULL,
    since REAL NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    last_notified REAL NOT NULL,"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS target_state (
    target TEXT PRIMARY KEY,
    url TEXT NOT NULL,
{_STATE_COLUMNS}
    labels TEXT NOT NULL DEFAULT '{{}}',
    notifiers TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notifier TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (notifier, next_attempt, id);
CREATE TABLE IF NOT EXISTS location_state (
    target TEXT NOT NULL,
    location TEXT NOT NULL,
{_STATE_COLUMNS}
    PRIMARY KEY (target, location)
);
"""

SELECT = (
    "SELECT target, url, state, since, reason, error, incident_id, last_notified, labels,"
    " notifiers FROM target_state"
)
SELECT_ONE = SELECT + " WHERE target = ?"
SELECT_INCIDENTS = SELECT + " WHERE state IN ('degraded', 'down')"
# A location's verdicts with their fleet rows' URL, labels and notifiers. A fleet row without
# any verdict is from a file written before verdicts were kept (one location, whose verdict
# was the fleet state): it counts as this location's.
SELECT_VERDICTS = """
SELECT f.target, f.url, COALESCE(v.state, f.state), COALESCE(v.since, f.since),
       COALESCE(v.reason, f.reason), COALESCE(v.error, f.error),
       COALESCE(v.incident_id, f.incident_id), COALESCE(v.last_notified, f.last_notified),
       f.labels, f.notifiers
FROM target_state f LEFT JOIN location_state v ON v.target = f.target AND v.location = ?
WHERE v.target IS NOT NULL
   OR NOT EXISTS (SELECT 1 FROM location_state w WHERE w.target = f.target)
"""
UPSERT_VERDICT = "INSERT OR REPLACE INTO location_state VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_TARGET_VERDICTS = (
    "SELECT location, state, since, reason, error, incident_id, last_notified"
    " FROM location_state WHERE target = ?"
)
