"""The store's tables (SQLAlchemy Core). These never leave ``scanner.store``.

One scan row per run (per cluster). Its detail is content-addressed (issue 20), so that a scan that
finds what the previous one found writes almost nothing: the scan names a **verdict set**
(``verdict_sets``), the ordered list of its verdicts; each member (``verdict_set_members``) names one
**verdict** (``images``, with the signatures judged for it and their checks) and one **container
group** (``container_groups``: the containers that ran that image). Verdicts, container groups and
verdict sets are each keyed by the SHA-256 of their canonical content (:mod:`scanner.store.codec`),
written once and shared by every scan that has the same content; retention deletes one only when no
scan refers to it any more. Everything is written in one transaction by
:meth:`scanner.store.Store.finish_scan`. ``verification_cache`` survives across scans
(issue 9): it is keyed by digest and the fingerprint of the trust material that judged it.

Enumerations (status, outcome, state, ...) are stored as plain strings, not database enums, so that a
new value never needs a migration. Free-form lists and mappings (reasons, notes, details, errors) are
JSON columns, which work the same on SQLite and PostgreSQL.

The tables are Core ``Table`` objects, not declarative ORM classes: the store reads and writes with Core
statements only, and declaring them through the ORM made every start-up (every scan: a warm scan of
a pod file is about a second and a half) import ``sqlalchemy.orm`` and build its mappers, ~0.1 CPU-s
(issue 19). A column is NOT NULL unless it says ``nullable=True`` (:func:`_col`), as the typed models
had it; ``alembic check`` (tests/integration/test_store_migrations.py) proves the migrations agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

# Deterministic constraint names (Alembic's naming.rst): batch migrations on SQLite and drops on
# PostgreSQL need to find constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Naive datetimes are refused on the way in (an unknown zone is a bug, not a default). SQLite keeps
    no zone, so values are stored as naive UTC and given ``UTC`` back on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given to the store: use an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _col(name: str, type_: Any, *args: Any, nullable: bool = False, **kw: Any) -> sa.Column[Any]:
    """A column, NOT NULL unless ``nullable`` (a primary key always is)."""
    return sa.Column(name, type_, *args, nullable=nullable, **kw)


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def _utc(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return _col(name, UTCDateTime(), nullable=nullable)


def _json(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return _col(name, sa.JSON(), nullable=nullable)


scans = sa.Table(
    "scans", metadata,
    _id(),
    _col("cluster", sa.String(253)),
    _col("state", sa.String(16)),
    _utc("started_at"),
    _utc("finished_at", nullable=True),
    _utc("heartbeat_at"),
    _col("policy_digest", sa.String(200)),
    _col("sigaudit_version", sa.String(64)),
    # Who runs it: host name and process id, to tell a crashed scan from a live one on the same host.
    _col("owner_host", sa.String(253), server_default=""),
    _col("owner_pid", sa.Integer, server_default="0"),
    _json("errors"),
    _json("counts"),  # {status: number of images}
    _col("total", sa.Integer, server_default="0"),
    _col("compliant", sa.Integer, server_default="0"),
    # The scan's own counters (registry requests/errors by registry and code, verification outcomes)
    # for the metrics collector, and the policy it applied (rules, exemptions) for the report.
    _json("stats", nullable=True),
    _json("policy_summary", nullable=True),
    # The scan's verdicts; NULL for a scan that recorded none (running, failed).
    _col("verdict_set_id", sa.Integer, sa.ForeignKey("verdict_sets.id"), nullable=True),
    sa.Index("ix_scans_cluster_started_at", "cluster", "started_at"),
    sa.Index("ix_scans_cluster_state", "cluster", "state"),
    sa.Index("ix_scans_verdict_set_id", "verdict_set_id"),
)

# The ordered verdicts of one or more scans, keyed by the hash of its members' content hashes.
verdict_sets = sa.Table(
    "verdict_sets", metadata,
    _id(),
    _col("content_hash", sa.String(80), unique=True),
    _col("size", sa.Integer),  # number of members
)

# Position ``position`` of a verdict set: one verdict and the containers that ran its image.
verdict_set_members = sa.Table(
    "verdict_set_members", metadata,
    _col("set_id", sa.Integer, sa.ForeignKey("verdict_sets.id", ondelete="CASCADE"), primary_key=True),
    _col("position", sa.Integer, primary_key=True, autoincrement=False),
    # No cascade: a verdict or a group goes only once no member names it (retention.py).
    _col("image_id", sa.Integer, sa.ForeignKey("images.id")),
    _col("group_id", sa.Integer, sa.ForeignKey("container_groups.id")),
    sa.Index("ix_verdict_set_members_image_id", "image_id"),
    sa.Index("ix_verdict_set_members_group_id", "group_id"),
)

# The containers of one verdict, keyed by the hash of their canonical content.
container_groups = sa.Table(
    "container_groups", metadata,
    _id(),
    _col("content_hash", sa.String(80), unique=True),
)

# What a finished scan's trend needs, kept after retention deletes its detail (issue 20).
#
# Written with the scan (:meth:`scanner.store.Store.finish_scan`, in the same transaction) and
# back-filled by migration 0006. ``scan_id`` names the scan but is no foreign key: the scan row and
# its verdicts go when ``sigaudit db prune`` deletes the detail, the summary stays (years of trend in
# a few hundred bytes per scan). ``namespaces`` is ``{namespace: {status: distinct images}}``.
scan_summaries = sa.Table(
    "scan_summaries", metadata,
    _col("scan_id", sa.Integer, primary_key=True, autoincrement=False),
    _col("cluster", sa.String(253)),
    _col("state", sa.String(16)),
    _utc("started_at"),
    _utc("finished_at", nullable=True),
    _col("policy_digest", sa.String(200)),
    _col("sigaudit_version", sa.String(64)),
    _col("total", sa.Integer),
    _col("compliant", sa.Integer),
    _json("counts"),  # {status: number of images}
    _json("namespaces"),
    sa.Index("ix_scan_summaries_cluster_started_at", "cluster", "started_at"),
)

# One verdict: a running digest (or a container whose digest could not be resolved), without
# its containers (a ``container_groups`` row); shared by every scan whose verdict has this content.
images = sa.Table(
    "images", metadata,
    _id(),
    # codec.verdict_hash of the verdict (its containers left out); "legacy:<id>" for rows of older scans.
    _col("content_hash", sa.String(80), unique=True),
    _col("resolved", sa.Boolean),  # RunningImage (true) or UnresolvedImage
    # The normalised reference; all NULL for an unresolved image without one.
    _col("registry", sa.String(255), nullable=True),
    _col("repository", sa.String(512), nullable=True),
    _col("tag", sa.String(128), nullable=True),
    _col("digest", sa.String(200), nullable=True),
    _col("image", sa.Text),  # as written (unresolved) or the reference's text
    _col("unresolved_reason", sa.Text, nullable=True),
    _json("notes"),
    _json("pull_secrets"),  # [[namespace, secret name]]: names only, never contents
    _col("status", sa.String(32)),
    _json("reasons"),
    _col("rule", sa.String(253), nullable=True),
    _col("policy_source", sa.Text, nullable=True),
    _col("expiring", sa.Boolean),
    _utc("not_after", nullable=True),
    _col("warn_only", sa.Boolean),
    # Index into ``reasons`` of the one that decided the status; NULL in scans stored before 0004 (0).
    _col("deciding_reason", sa.Integer, nullable=True),
    # The exemptions and waivers that mattered to the verdict (``Verdict.exemptions``, as
    # ``codec.exemption_to_json``); NULL in scans stored before 0005 (reports say "not recorded").
    _json("exemptions", nullable=True),
    # Why a non-compliant image judged by an imported admission policy runs anyway (``Verdict.admission``,
    # as ``codec.admission_to_json``); NULL without one and in scans stored before 0008.
    _json("admission", nullable=True),
    # ``watch``: found by ``serve --watch`` after the scan finished (``Verdict.source``); NULL: the scan's own.
    _col("source", sa.String(16), nullable=True),
    # ``Verdict.checked_at``: when the signatures of a verdict served from the re-check window
    # (``--recheck-after``) were last re-listed; NULL when they were listed in this scan (and in scans
    # stored before 0010).
    _utc("checked_at", nullable=True),
    sa.Index("ix_images_digest", "digest"),
)

# One container of one pod, in the group of the containers that ran one verdict's image.
containers = sa.Table(
    "containers", metadata,
    _id(),
    _col("group_id", sa.Integer, sa.ForeignKey("container_groups.id", ondelete="CASCADE")),
    _col("position", sa.Integer),
    _col("namespace", sa.String(253)),
    _col("pod", sa.String(253)),
    _col("pod_uid", sa.String(64)),
    _col("container", sa.String(253)),
    _col("container_type", sa.String(32)),
    _col("image", sa.Text),  # as written in the pod spec
    _col("image_id", sa.Text, nullable=True),  # status imageID, raw
    _col("workload_kind", sa.String(128)),
    _col("workload_name", sa.String(253)),
    _json("pull_secrets"),  # secret names only
    sa.Index("ix_containers_group_id", "group_id"),
)

# One signature judged for one image by one verifier.
signatures = sa.Table(
    "signatures", metadata,
    _id(),
    _col("image_row_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE")),
    _col("position", sa.Integer),
    _col("kind", sa.String(64)),
    _col("verifier", sa.Text),
    _col("outcome", sa.String(16)),
    _col("reason", sa.Text),
    _col("failure", sa.String(16)),
    _col("signer", sa.Text),
    _col("key_sha256", sa.String(64), nullable=True),
    _col("identity", sa.Text, nullable=True),
    _col("issuer", sa.Text, nullable=True),
    _utc("signed_at", nullable=True),
    # Where signed_at comes from (scanner.models.TimeSource); NULL in rows older than migration 0003.
    _col("signed_at_source", sa.String(32), nullable=True),
    _utc("not_after", nullable=True),
    _json("details"),
    sa.Index("ix_signatures_image_row_id", "image_row_id"),
    sa.Index("ix_signatures_key_sha256", "key_sha256"),
)

# One check (integrity, authenticity, identity, ...) of one signature.
signature_checks = sa.Table(
    "signature_checks", metadata,
    _id(),
    _col("signature_id", sa.Integer, sa.ForeignKey("signatures.id", ondelete="CASCADE")),
    _col("position", sa.Integer),
    _col("name", sa.String(64)),
    _col("outcome", sa.String(16)),
    _col("reason", sa.Text),
    _col("enforced", sa.Boolean),
    sa.Index("ix_signature_checks_signature_id", "signature_id"),
)

# Signature results kept across scans (issue 9).
#
# Keyed by the image digest and the verifier's decision identity for the image
# (``Verifier.decision_identity``: everything its results depend on, the repository where it
# matters, trust material by content, a logic version), so a changed policy, trust root or
# repository misses the cache. The key column keeps its first name, ``trust_fingerprint``; it holds
# ``di<N>:<sha256>`` identities, which no key written before them (a bare sha256 hex,
# ``static:…``) can equal, so old rows are never read, only left for :meth:`Store.cache_prune`.
# ``material_fingerprint`` identifies the signature material that was judged (e.g. the ``.sig``
# manifest digest and the referrers index digest): a cheap re-list that gives a different fingerprint
# means the signatures changed. Expiry and revocation are re-evaluated by the caller every scan; the
# cache only saves the cryptography.
verification_cache = sa.Table(
    "verification_cache", metadata,
    _col("digest", sa.String(200), primary_key=True),
    _col("trust_fingerprint", sa.String(200), primary_key=True),
    _col("material_fingerprint", sa.String(512)),
    _json("results"),  # serialised SignatureResult tuple
    _utc("computed_at"),
    _utc("used_at"),
    sa.Index("ix_verification_cache_used_at", "used_at"),
)

# When the signatures of a digest were last seen attached (``--recheck-after``, issue 19).
#
# One row per digest and *scope*: a hash of the cluster, the registry, the repository and the names of the
# credential sources the digest was read with (never their contents), so that a re-list in one
# repository, or with one tenant's pull secrets, never stands for another. ``material_fingerprint``
# is what the re-list (or the verification) found; a mark counts only for cache entries of that same
# material. Written only by scans with a re-check window; pruned with the verification cache.
signature_relists = sa.Table(
    "signature_relists", metadata,
    _col("digest", sa.String(200), primary_key=True),
    _col("scope", sa.String(64), primary_key=True),
    _col("material_fingerprint", sa.String(512)),
    _utc("checked_at"),
    sa.Index("ix_signature_relists_checked_at", "checked_at"),
)

# What each notification receiver was last told about each violation of a cluster (issue 24):
# the dedup state that makes a violation sent once and resent only when it changes.
#
# ``key`` names the subject (the rule and the running digest, or the unresolved image);
# ``fingerprint`` what was said about it (kind, status, expiry, namespaces); ``state`` is
# ``pending`` from before a delivery until it succeeded (a pending row is sent again after the next
# scan while the violation lasts), then ``sent``. ``kind`` and ``namespaces`` rebuild the labels of
# an Alertmanager alert to resolve. No secret and no receiver URL is stored here: receivers are
# named by their configured ``name``. No foreign key: ``sigaudit db prune`` leaves it alone.
notification_state = sa.Table(
    "notification_state", metadata,
    _col("cluster", sa.String(253), primary_key=True),
    _col("receiver", sa.String(64), primary_key=True),
    _col("key", sa.String(512), primary_key=True),
    _col("fingerprint", sa.String(64)),
    _col("kind", sa.String(32)),
    _col("state", sa.String(16)),
    _json("namespaces"),
    _col("scan_id", sa.Integer),  # the scan whose change was (to be) sent
    _utc("sent_at"),
)

# The bytes an evidence pack is built from (issue #23): registry answers a verification used
# (signature manifests, layers, referrers), trust material, per-scan indexes. Content-addressed by
# sha256 and written once, so the material of a digest verified cold once serves every warm scan
# after it. No secret is stored here: registry answers and public trust material only.
evidence_blobs = sa.Table(
    "evidence_blobs", metadata,
    _col("sha256", sa.String(64), primary_key=True),
    _col("data", sa.LargeBinary),
)

# Names for evidence blobs: ``scan/<id>`` (a scan's evidence index) and
# ``material/<digest>/<sha256 of the material fingerprint>`` (what a digest was verified on, cold).
# Written once; no foreign key, so a scan's deletion leaves them to ``sigaudit db prune``.
evidence_refs = sa.Table(
    "evidence_refs", metadata,
    _col("name", sa.String(512), primary_key=True),
    _col("sha256", sa.String(64)),
    _utc("created_at"),
)
