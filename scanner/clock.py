"""The clock is injected everywhere: expiry, revocation and timestamp logic take ``now``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def fixed_clock(at: datetime) -> Clock:
    if at.tzinfo is None:
        raise ValueError("fixed_clock needs an aware datetime")
    return lambda: at


def parse_kube_time(value: object) -> datetime | None:
    """A Kubernetes ``metav1.Time`` (RFC 3339, e.g. ``2026-01-02T03:04:05Z``) as an aware UTC datetime;
    None for anything else (absent, not a string, no timezone, malformed): such a time is unknown, never
    guessed."""
    if not isinstance(value, str) or not 10 < len(value) <= 40:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None or "T" not in text.upper():
        return None
    return parsed.astimezone(UTC)
