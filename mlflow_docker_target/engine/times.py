"""Times as the engine reports them."""

from __future__ import annotations

from datetime import datetime, timezone


def engine_time(text: str) -> datetime | None:
    """A time the engine reports (RFC 3339, UTC, nanoseconds), to the second; ``None`` for
    anything else (an empty field, Docker's zero time is parsed as year 1)."""
    try:
        return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
