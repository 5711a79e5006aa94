"""Verdicts and scans built in memory for tests of what reads them (reports, table, report CLI): one
builder, so a new Verdict field is added in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from scanner.models import (
    Check,
    CheckName,
    ContainerRef,
    ContainerType,
    ExemptionRef,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureResult,
    Status,
    Verdict,
    Workload,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
GEN = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def digest(name: str) -> str:
    return "sha256:" + (name.encode().hex() * 64)[:64]


def container(ns: str, pod: str, name: str = "app", *, kind: str = "Deployment", workload: str | None = None,
              ctype: ContainerType = ContainerType.CONTAINER, image: str = "") -> ContainerRef:
    return ContainerRef(namespace=ns, pod=pod, container=name, container_type=ctype, image=image or "img",
                        image_id=None, workload=Workload(kind, workload or pod.rsplit("-", 1)[0]))


def signature(ok: bool = True, *, signer: str = "sha256:" + "ab" * 32, details: dict | None = None,
              reason: str = "") -> SignatureResult:
    return SignatureResult(
        kind="cosign", verifier="cosign key trusted.pub", outcome=Outcome.PASSED if ok else Outcome.FAILED,
        reason=reason or ("signed with key trusted.pub" if ok else "does not verify"),
        failure=SignatureFailure.NONE if ok else SignatureFailure.INVALID, signer=signer, key_sha256="ab" * 32,
        checks=(Check(CheckName.AUTHENTICITY, Outcome.PASSED if ok else Outcome.FAILED, "verifies"),
                Check(CheckName.TLOG, Outcome.SKIPPED, "ignoreTlog", enforced=False)),
        details=details or {"chain_sha256": ["11" * 32, "22" * 32], "log_index": 42},
    )


def verdict(name: str, status: Status, containers: Sequence[ContainerRef], *, reasons: Sequence[str] = (),
            sigs: Sequence[SignatureResult] | None = None, expiring: bool = False,
            not_after: datetime | None = None, warn_only: bool = False, repo: str | None = None,
            exemptions: Sequence[ExemptionRef] = ()) -> Verdict:
    ref = ImageReference("registry.example", repo or f"team/{name}", "1.0", digest(name))
    if sigs is None:
        sigs = (signature(True),) if status is Status.VERIFIED else ()
    return Verdict(RunningImage(ref, tuple(containers)), status, tuple(reasons) or (status.value,), "rule-a",
                   "policy.yaml", tuple(sigs), expiring, not_after, warn_only, exemptions=tuple(exemptions))


def result(verdicts: Sequence[Verdict], *, scan_id: int | None = 2, at: datetime = T0,
           cluster: str = "prod") -> ScanResult:
    return ScanResult(cluster=cluster, started_at=at, finished_at=at + timedelta(seconds=30),
                      state=ScanState.COMPLETE, verdicts=tuple(verdicts), policy_digest="sha256:" + "cd" * 32,
                      scan_id=scan_id, sigaudit_version="0.1.0")
