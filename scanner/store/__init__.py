"""The store: every scan, image, verdict and signature outcome in SQL (SQLAlchemy 2 + Alembic).

SQLite by default, PostgreSQL by URL. ORM classes never leave this package: callers get the frozen
models of ``scanner.models`` and the summaries defined here.
"""

from scanner.store.engine import default_db_url, display_url, mask_password
from scanner.store.migrate import check, current_revision, downgrade, head_revision, upgrade
from scanner.store.store import (
    ABANDONED,
    CachedVerification,
    ClusterHead,
    DiskUsage,
    Notified,
    PruneResult,
    RelistMark,
    ScanSummary,
    Store,
    open_store,
)

__all__ = [
    "ABANDONED",
    "CachedVerification",
    "ClusterHead",
    "DiskUsage",
    "Notified",
    "PruneResult",
    "RelistMark",
    "ScanSummary",
    "Store",
    "check",
    "current_revision",
    "default_db_url",
    "display_url",
    "downgrade",
    "head_revision",
    "mask_password",
    "open_store",
    "upgrade",
]
