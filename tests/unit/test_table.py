"""The people's table (scanner/table.py): one row per verdict, headed by the reason that decided it."""

from __future__ import annotations

import io
from dataclasses import replace

from rich.console import Console

from scanner.models import Status
from scanner.table import print_table
from tests.harness.verdicts import container, result, verdict


def test_the_reason_column_shows_the_reason_that_decided_the_status() -> None:
    v = replace(verdict("revoked", Status.REVOKED, [container("payments", "worker-1")],
                        reasons=("key a: signature does not verify", "key b: but key sha256:cd is revoked (INC-7)")),
                deciding_reason=1)
    out = io.StringIO()
    print_table(result([v]), Console(file=out, width=400, soft_wrap=False, color_system=None))
    row = next(line for line in out.getvalue().splitlines() if "revoked" in line and "team/revoked" in line)
    assert "INC-7" in row and "does not verify" not in row


def test_the_footer_counts_containers_that_name_a_tag_not_a_digest() -> None:
    tagged = container("web", "front-1", image="registry.example/team/front:1.0")
    pinned = container("web", "api-1", image="registry.example/team/api@sha256:" + "a" * 64)
    for containers, expected in (([tagged, pinned], "Finding: 1 container(s) name a tag"), ([pinned], None)):
        out = io.StringIO()
        print_table(result([verdict("front", Status.VERIFIED, containers)]),
                    Console(file=out, width=400, soft_wrap=False, color_system=None))
        if expected:
            assert expected in out.getvalue()
        else:
            assert "Finding" not in out.getvalue()
