"""Every series sigaudit exports: name, type, labels and meaning (the README table is generated from here).

Conventions (Prometheus instrumentation practices): the ``sigaudit_`` prefix, base units (seconds),
Unix timestamps rather than ages, a ``cluster`` label on every series, low-cardinality labels by
default; per-image series only with ``--per-image-metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "sigaudit_"

# Bounds on the series whose label values a tenant chooses (issue #27): a namespace's owner names its
# workloads, and any pod spec can name a registry host. Beyond the top N series (by value, then labels)
# the rest are summed into one series whose free labels say OTHER, so a scrape never carries more than
# N + 1 series of each (N + one per status for the workloads), whatever the cluster runs.
MAX_WORKLOAD_SERIES = 100
MAX_REGISTRY_SERIES = 50
OTHER = "(other)"  # no namespace, workload, kind or registry host can be spelled with parentheses
BARE_POD = "(bare pod)"  # the workload label of pods without a controller: their names are generated


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    type: str  # "gauge" | "info"-style gauge (value 1)
    labels: tuple[str, ...]
    help: str
    per_image: bool = False  # only with --per-image-metrics
    optional: bool = False  # only when the feature is configured (e.g. --notify)


SCAN_INFO = Series(
    "sigaudit_scan_info", "gauge", ("cluster", "scan_id", "policy_digest", "sigaudit_version"),
    "The latest complete scan of the cluster (value 1); the other verdict series describe this scan.")
IMAGES = Series(
    "sigaudit_images", "gauge", ("cluster", "namespace", "status", "compliant"),
    "Unique running images (one per digest and policy rule) with at least one container in the namespace, "
    "by verdict status, in the latest complete scan.")
CONTAINERS = Series(
    "sigaudit_containers", "gauge", ("cluster", "namespace", "status", "compliant"),
    "Containers (including init and ephemeral containers) by the verdict status of the image they run, "
    "in the latest complete scan.")
NAMESPACE_COMPLIANCE = Series(
    "sigaudit_namespace_compliance_ratio", "gauge", ("cluster", "namespace"),
    "Compliant images / images in the namespace (0..1), latest complete scan.")
COMPLIANCE = Series(
    "sigaudit_compliance_ratio", "gauge", ("cluster",),
    "Compliant images / images in the cluster (0..1; 1 with no images), latest complete scan.")
NONCOMPLIANT_WORKLOADS = Series(
    "sigaudit_noncompliant_workload_containers", "gauge",
    ("cluster", "namespace", "workload_kind", "workload", "status"),
    "Containers of a workload (top-level owner) that run a non-compliant image, by status; only workloads "
    "with violations appear. Pods without a controller count as workload_kind=\"Pod\", "
    f"workload=\"{BARE_POD}\" (never the pod's name); at most {MAX_WORKLOAD_SERIES} series, the rest summed "
    f"per status under namespace, workload_kind and workload \"{OTHER}\".")
EXPIRING = Series(
    "sigaudit_expiring_images", "gauge", ("cluster", "namespace"),
    "Images whose signature, certificate or exemption lapses inside the policy's expiry warning window "
    "(0 when none), latest complete scan.")
NAMESPACE_NOT_AFTER = Series(
    "sigaudit_namespace_earliest_not_after_timestamp_seconds", "gauge", ("cluster", "namespace"),
    "Earliest not-after (signature/certificate expiry or exemption end) among the namespace's images, "
    "Unix seconds; absent when nothing in the namespace expires.")
VERIFICATIONS = Series(
    "sigaudit_verifications", "gauge", ("cluster", "verifier", "outcome", "reason"),
    "Signature results in the latest complete scan by verifier kind (cosign, notation, ...), outcome "
    "(passed, failed, error, skipped) and reason class (none, invalid, expired, revoked, error).")
REGISTRY_REQUESTS = Series(
    "sigaudit_registry_requests", "gauge", ("cluster", "registry", "code"),
    "HTTP requests the latest complete scan made, by registry and status code (\"error\" when no response); "
    f"at most {MAX_REGISTRY_SERIES} series, the rest summed under registry and code \"{OTHER}\".")
REGISTRY_ERRORS = Series(
    "sigaudit_registry_errors", "gauge", ("cluster", "registry", "code"),
    "Failed registry requests of the latest complete scan, by registry and status code; at most "
    f"{MAX_REGISTRY_SERIES} series, the rest summed under registry and code \"{OTHER}\".")
TAG_REFERENCES = Series(
    "sigaudit_tag_reference_containers", "gauge", ("cluster", "namespace"),
    "Containers whose pod spec names an image by tag rather than by digest (Kyverno verifyDigest, Gatekeeper "
    "k8simagedigests), by namespace (0 when none), latest complete scan. A finding: verdicts are unchanged.")
MAX_ADMISSION_SERIES = 100
ADMISSION_BYPASS = Series(
    "sigaudit_admission_bypass_containers", "gauge", ("cluster", "namespace", "cause"),
    "Containers running a non-compliant image that an imported admission policy (Kyverno, policy-controller, "
    "kritis) rejects today, by namespace and likely cause (created-before-policy, audit-mode, warn-mode, "
    "admission-disabled, kind-not-matched, excluded-at-admission, revoked-since-admission, "
    "expired-since-admission, signature-removed-after-admission, webhook-fails-open, unexplained); only "
    f"namespaces with such containers appear; at most {MAX_ADMISSION_SERIES} series, the rest summed per cause "
    f"under namespace \"{OTHER}\". An explanation: verdicts are unchanged. Only with --policy-from imports.",
    optional=True)
NOTIFICATIONS_FAILED = Series(
    "sigaudit_notifications_failed", "gauge", ("cluster", "receiver"),
    "1 if the notifications of the latest complete scan could not be delivered to the receiver (named as in "
    "the --notify file) within its retry bound, else 0; the undelivered ones are sent again after the next "
    "scan. Only with --notify.", optional=True)
SCAN_DURATION = Series(
    "sigaudit_scan_duration_seconds", "gauge", ("cluster",),
    "Wall-clock duration of the latest complete scan.")
LAST_SUCCESS = Series(
    "sigaudit_last_success_timestamp_seconds", "gauge", ("cluster",),
    "When the latest complete scan finished, Unix seconds (the key metric of a batch job).")
LAST_COMPLETION = Series(
    "sigaudit_last_completion_timestamp_seconds", "gauge", ("cluster",),
    "When the latest finished scan (complete, partial or failed) ended, Unix seconds.")
LAST_STATE = Series(
    "sigaudit_last_scan_state", "gauge", ("cluster", "state"),
    "1 for the state of the latest finished scan (complete, partial, failed), 0 for the others.")
STORE_UP = Series(
    "sigaudit_store_up", "gauge", ("cluster",),
    "1 if the database answered this collection, 0 if not (then the other series are absent). Only "
    "exported when the metrics come from a database (not with `scan --no-store`).")
STORE_SIZE = Series(
    "sigaudit_store_size_bytes", "gauge", ("cluster",),
    "Size of the database (the SQLite file and its WAL; PostgreSQL: pg_database_size). Only from a database.")
STORE_FREE = Series(
    "sigaudit_store_free_bytes", "gauge", ("cluster",),
    "Bytes left on the volume holding the SQLite file (absent for PostgreSQL). Alert well before 0: "
    "`sigaudit db prune` or `--retention` makes room.")
STORE_VOLUME = Series(
    "sigaudit_store_volume_bytes", "gauge", ("cluster",),
    "Size of the volume holding the SQLite file (absent for PostgreSQL).")
STORE_CAPACITY = Series(
    "sigaudit_store_capacity_bytes", "gauge", ("cluster",),
    "The size the database may reach, as the operator declared it (`--db-capacity`; absent when not declared): "
    "PostgreSQL does not tell a client how full the server's disk is. Past 80% sigaudit warns; a scan is not "
    "begun within 32 MiB of it. Alert on sigaudit_store_size_bytes / sigaudit_store_capacity_bytes.")
IMAGE_INFO = Series(
    "sigaudit_image_info", "gauge",
    ("cluster", "namespace", "image", "digest", "status", "compliant", "rule"),
    "One series per image and namespace (value 1), latest complete scan. Opt-in: --per-image-metrics.",
    per_image=True)
IMAGE_NOT_AFTER = Series(
    "sigaudit_image_not_after_timestamp_seconds", "gauge", ("cluster", "namespace", "image", "digest"),
    "Not-after of each image that expires, Unix seconds. Opt-in: --per-image-metrics.", per_image=True)
WATCH_QUEUE = Series(
    "sigaudit_watch_queue_pods", "gauge", ("cluster",),
    "Pods waiting for `serve --watch` to verify a new running digest. Only with --watch.", optional=True)
WATCH_VERDICTS = Series(
    "sigaudit_watch_verdicts", "gauge", ("cluster",),
    "Verdicts `serve --watch` recorded since the server started. Only with --watch.", optional=True)
WATCH_DROPPED = Series(
    "sigaudit_watch_dropped_pods", "gauge", ("cluster",),
    "Pods dropped since start because the watch queue was full (listed again once it drains). Only with --watch.",
    optional=True)
WATCH_FRESH = Series(
    "sigaudit_watch_fresh", "gauge", ("cluster",),
    "1 while the pod watch hears from the API server (0: stale, see /readyz). Only with --watch.", optional=True)

ALL: tuple[Series, ...] = (
    SCAN_INFO, IMAGES, CONTAINERS, NAMESPACE_COMPLIANCE, COMPLIANCE, NONCOMPLIANT_WORKLOADS, EXPIRING,
    NAMESPACE_NOT_AFTER, VERIFICATIONS, REGISTRY_REQUESTS, REGISTRY_ERRORS, TAG_REFERENCES, ADMISSION_BYPASS,
    NOTIFICATIONS_FAILED,
    SCAN_DURATION,
    LAST_SUCCESS, LAST_COMPLETION, LAST_STATE, STORE_UP, STORE_SIZE, STORE_FREE, STORE_VOLUME, STORE_CAPACITY,
    IMAGE_INFO,
    IMAGE_NOT_AFTER, WATCH_QUEUE, WATCH_VERDICTS, WATCH_DROPPED, WATCH_FRESH,
)


def markdown_table() -> str:
    """The README's table of series."""
    rows = ["| Series | Type | Labels | Meaning |", "|---|---|---|---|"]
    for s in ALL:
        labels = ", ".join(f"`{label}`" for label in s.labels)
        rows.append(f"| `{s.name}` | {s.type} | {labels} | {s.help} |")
    return "\n".join(rows) + "\n"
