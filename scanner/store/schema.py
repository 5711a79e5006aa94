"""SQLAlchemy 2 typed models of the store. These classes never leave ``scanner.store``.

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
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[Any]: sa.JSON(),
    }


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(sa.String(253))
    state: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime]
    policy_digest: Mapped[str] = mapped_column(sa.String(200))
    sigaudit_version: Mapped[str] = mapped_column(sa.String(64))
    # Who runs it: host name and process id, to tell a crashed scan from a live one on the same host.
    owner_host: Mapped[str] = mapped_column(sa.String(253), server_default="")
    owner_pid: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    errors: Mapped[list[Any]]
    counts: Mapped[dict[str, Any]]  # {status: number of images}
    total: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    compliant: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    # The scan's own counters (registry requests/errors by registry and code, verification outcomes)
    # for the metrics collector, and the policy it applied (rules, exemptions) for the report.
    stats: Mapped[dict[str, Any] | None]
    policy_summary: Mapped[dict[str, Any] | None]
    # The scan's verdicts; NULL for a scan that recorded none (running, failed).
    verdict_set_id: Mapped[int | None] = mapped_column(sa.ForeignKey("verdict_sets.id"))

    __table_args__ = (
        sa.Index("ix_scans_cluster_started_at", "cluster", "started_at"),
        sa.Index("ix_scans_cluster_state", "cluster", "state"),
        sa.Index("ix_scans_verdict_set_id", "verdict_set_id"),
    )


class VerdictSet(Base):
    """The ordered verdicts of one or more scans, keyed by the hash of its members' content hashes."""

    __tablename__ = "verdict_sets"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(sa.String(80), unique=True)
    size: Mapped[int] = mapped_column(sa.Integer)  # number of members


class VerdictSetMember(Base):
    """Position ``position`` of a verdict set: one verdict and the containers that ran its image."""

    __tablename__ = "verdict_set_members"

    set_id: Mapped[int] = mapped_column(sa.ForeignKey("verdict_sets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    # No cascade: a verdict or a group goes only once no member names it (retention.py).
    image_id: Mapped[int] = mapped_column(sa.ForeignKey("images.id"))
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("container_groups.id"))

    __table_args__ = (
        sa.Index("ix_verdict_set_members_image_id", "image_id"),
        sa.Index("ix_verdict_set_members_group_id", "group_id"),
    )


class ContainerGroup(Base):
    """The containers of one verdict, keyed by the hash of their canonical content."""

    __tablename__ = "container_groups"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(sa.String(80), unique=True)


class ScanSummaryRow(Base):
    """What a finished scan's trend needs, kept after retention deletes its detail (issue 20).

    Written with the scan (:meth:`scanner.store.Store.finish_scan`, in the same transaction) and
    back-filled by migration 0006. ``scan_id`` names the scan but is no foreign key: the scan row and
    its verdicts go when ``sigaudit db prune`` deletes the detail, the summary stays (years of trend in
    a few hundred bytes per scan). ``namespaces`` is ``{namespace: {status: distinct images}}``.
    """

    __tablename__ = "scan_summaries"

    scan_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    cluster: Mapped[str] = mapped_column(sa.String(253))
    state: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    policy_digest: Mapped[str] = mapped_column(sa.String(200))
    sigaudit_version: Mapped[str] = mapped_column(sa.String(64))
    total: Mapped[int] = mapped_column(sa.Integer)
    compliant: Mapped[int] = mapped_column(sa.Integer)
    counts: Mapped[dict[str, Any]]  # {status: number of images}
    namespaces: Mapped[dict[str, Any]]

    __table_args__ = (sa.Index("ix_scan_summaries_cluster_started_at", "cluster", "started_at"),)


class Image(Base):
    """One verdict: a running digest (or a container whose digest could not be resolved), without
    its containers (a ``container_groups`` row); shared by every scan whose verdict has this content."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    # codec.verdict_hash of the verdict (its containers left out); "legacy:<id>" for rows of older scans.
    content_hash: Mapped[str] = mapped_column(sa.String(80), unique=True)
    resolved: Mapped[bool] = mapped_column(sa.Boolean)  # RunningImage (true) or UnresolvedImage
    # The normalised reference; all NULL for an unresolved image without one.
    # "registry" is reserved on declarative classes: the attribute has another name than the column.
    ref_registry: Mapped[str | None] = mapped_column("registry", sa.String(255))
    repository: Mapped[str | None] = mapped_column(sa.String(512))
    tag: Mapped[str | None] = mapped_column(sa.String(128))
    digest: Mapped[str | None] = mapped_column(sa.String(200))
    image: Mapped[str] = mapped_column(sa.Text)  # as written (unresolved) or the reference's text
    unresolved_reason: Mapped[str | None] = mapped_column(sa.Text)
    notes: Mapped[list[Any]]
    pull_secrets: Mapped[list[Any]]  # [[namespace, secret name]]: names only, never contents
    status: Mapped[str] = mapped_column(sa.String(32))
    reasons: Mapped[list[Any]]
    rule: Mapped[str | None] = mapped_column(sa.String(253))
    policy_source: Mapped[str | None] = mapped_column(sa.Text)
    expiring: Mapped[bool] = mapped_column(sa.Boolean)
    not_after: Mapped[datetime | None]
    warn_only: Mapped[bool] = mapped_column(sa.Boolean)
    # Index into ``reasons`` of the one that decided the status; NULL in scans stored before 0004 (0).
    deciding_reason: Mapped[int | None] = mapped_column(sa.Integer)
    # The exemptions and waivers that mattered to the verdict (``Verdict.exemptions``, as
    # ``codec.exemption_to_json``); NULL in scans stored before 0005 (reports say "not recorded").
    exemptions: Mapped[list[Any] | None]

    __table_args__ = (sa.Index("ix_images_digest", "digest"),)


class Container(Base):
    """One container of one pod, in the group of the containers that ran one verdict's image."""

    __tablename__ = "containers"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("container_groups.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    namespace: Mapped[str] = mapped_column(sa.String(253))
    pod: Mapped[str] = mapped_column(sa.String(253))
    pod_uid: Mapped[str] = mapped_column(sa.String(64))
    container: Mapped[str] = mapped_column(sa.String(253))
    container_type: Mapped[str] = mapped_column(sa.String(32))
    image: Mapped[str] = mapped_column(sa.Text)  # as written in the pod spec
    image_id: Mapped[str | None] = mapped_column(sa.Text)  # status imageID, raw
    workload_kind: Mapped[str] = mapped_column(sa.String(128))
    workload_name: Mapped[str] = mapped_column(sa.String(253))
    pull_secrets: Mapped[list[Any]]  # secret names only

    __table_args__ = (sa.Index("ix_containers_group_id", "group_id"),)


class Signature(Base):
    """One signature judged for one image by one verifier."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    image_row_id: Mapped[int] = mapped_column(sa.ForeignKey("images.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.String(64))
    verifier: Mapped[str] = mapped_column(sa.Text)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    failure: Mapped[str] = mapped_column(sa.String(16))
    signer: Mapped[str] = mapped_column(sa.Text)
    key_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    identity: Mapped[str | None] = mapped_column(sa.Text)
    issuer: Mapped[str | None] = mapped_column(sa.Text)
    signed_at: Mapped[datetime | None]
    # Where signed_at comes from (scanner.models.TimeSource); NULL in rows older than migration 0003.
    signed_at_source: Mapped[str | None] = mapped_column(sa.String(32))
    not_after: Mapped[datetime | None]
    details: Mapped[dict[str, Any]]

    __table_args__ = (
        sa.Index("ix_signatures_image_row_id", "image_row_id"),
        sa.Index("ix_signatures_key_sha256", "key_sha256"),
    )


class SignatureCheck(Base):
    """One check (integrity, authenticity, identity, ...) of one signature."""

    __tablename__ = "signature_checks"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    signature_id: Mapped[int] = mapped_column(sa.ForeignKey("signatures.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    name: Mapped[str] = mapped_column(sa.String(64))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    enforced: Mapped[bool] = mapped_column(sa.Boolean)

    __table_args__ = (sa.Index("ix_signature_checks_signature_id", "signature_id"),)


class VerificationCache(Base):
    """Signature results kept across scans (issue 9).

    Keyed by the image digest and the verifier's decision identity for the image
    (``Verifier.decision_identity``: everything its results depend on, the repository where it
    matters, trust material by content, a logic version), so a changed policy, trust root or
    repository misses the cache. The key column keeps its first name, ``trust_fingerprint``; it holds
    ``di<N>:<sha256>`` identities, which no key written before them (a bare sha256 hex,
    ``static:…``) can equal, so old rows are never read, only left for :meth:`Store.cache_prune`.
    ``material_fingerprint`` identifies the signature
    material that was judged (e.g. the ``.sig`` manifest digest and the referrers index digest): a
    cheap re-list that gives a different fingerprint means the signatures changed. Expiry and
    revocation are re-evaluated by the caller every scan; the cache only saves the cryptography.
    """

    __tablename__ = "verification_cache"

    digest: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    trust_fingerprint: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    material_fingerprint: Mapped[str] = mapped_column(sa.String(512))
    results: Mapped[list[Any]]  # serialised SignatureResult tuple
    computed_at: Mapped[datetime]
    used_at: Mapped[datetime]

    __table_args__ = (sa.Index("ix_verification_cache_used_at", "used_at"),)


metadata = Base.metadata


class NotificationState(Base):
    """What each notification receiver was last told about each violation of a cluster (issue 24):
    the dedup state that makes a violation sent once and resent only when it changes.

    ``key`` names the subject (the rule and the running digest, or the unresolved image);
    ``fingerprint`` what was said about it (kind, status, expiry, namespaces); ``state`` is
    ``pending`` from before a delivery until it succeeded (a pending row is sent again after the next
    scan while the violation lasts), then ``sent``. ``kind`` and ``namespaces`` rebuild the labels of
    an Alertmanager alert to resolve. No secret and no receiver URL is stored here: receivers are
    named by their configured ``name``. No foreign key: ``sigaudit db prune`` leaves it alone.
    """

    __tablename__ = "notification_state"

    cluster: Mapped[str] = mapped_column(sa.String(253), primary_key=True)
    receiver: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[str] = mapped_column(sa.String(16))
    namespaces: Mapped[list[Any]]
    scan_id: Mapped[int] = mapped_column(sa.Integer)  # the scan whose change was (to be) sent
    sent_at: Mapped[datetime]
