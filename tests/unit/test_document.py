"""The scan's JSON document carries facts as fields: which exemption applied or lapsed is not left to
be parsed out of the reasons."""

from __future__ import annotations

from datetime import UTC, datetime

from scanner.document import image_doc
from scanner.models import ExemptionKind, ExemptionRef, ImageReference, RunningImage, Status, Verdict


def test_an_images_exemptions_are_fields_of_the_document() -> None:
    until = datetime(2027, 1, 1, tzinfo=UTC)
    v = Verdict(RunningImage(ImageReference("r.io", "a", "1", "sha256:" + "1" * 64), ()), Status.EXEMPT,
                ("worded any way at all",),
                exemptions=(ExemptionRef(ExemptionKind.WAIVER, "allowlist", until, "secops", rule="kritis:ns/p"),
                            ExemptionRef(ExemptionKind.POLICY, "old", datetime(2026, 1, 1, tzinfo=UTC), lapsed=True)))
    assert image_doc(v)["exemptions"] == [
        {"kind": "waiver", "reason": "allowlist", "until": "2027-01-01T00:00:00Z", "approved_by": "secops",
         "applied": True, "rule": "kritis:ns/p"},
        {"kind": "policy", "reason": "old", "until": "2026-01-01T00:00:00Z", "approved_by": None,
         "applied": False, "rule": None},
    ]
    assert image_doc(Verdict(v.image, Status.VERIFIED, ("ok",)))["exemptions"] == []
