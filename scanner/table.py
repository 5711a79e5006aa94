"""The human table: one row per running image, non-compliant first."""

from __future__ import annotations

import errno

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scanner.document import summary
from scanner.models import RunningImage, ScanResult, Status


class PipeConsole(Console):
    """A rich Console that leaves a broken pipe to its caller: rich's own answer (stdout to /dev/null, then
    ``SystemExit(1)``) is exit 1, "non-compliant images found" in sigaudit's contract — a verdict the scan
    never reached. The CLI's guard turns the BrokenPipeError into its own exit (README "Exit codes")."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written to a reader that is gone
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


_STYLE = {Status.VERIFIED: "green", Status.EXEMPT: "cyan", Status.NO_POLICY: "yellow", Status.ERROR: "magenta"}


def print_table(result: ScanResult, console: Console | None = None) -> None:
    if console is None:
        console = PipeConsole(soft_wrap=False)
        if not console.is_terminal:
            console = PipeConsole(soft_wrap=False, width=200)  # files and pipes: don't squeeze into 80 columns
    table = Table(
        title=f"sigaudit scan of cluster {escape(result.cluster)} ({result.state.value})",
        show_lines=False,
        expand=False,
    )
    for col in ("STATUS", "IMAGE", "DIGEST", "WORKLOADS", "REASON"):
        table.add_column(col, overflow="fold")
    order = sorted(result.verdicts, key=lambda v: (v.compliant, v.status.value, str(v.image.reference or "")))
    for v in order:
        img = v.image
        workloads = sorted({f"{c.namespace}/{c.workload.kind}/{c.workload.name}" for c in img.containers})
        shown = ", ".join(workloads[:3]) + (f" (+{len(workloads) - 3})" if len(workloads) > 3 else "")
        digest = img.digest[7:19] if isinstance(img, RunningImage) else "-"
        ref = img.display.split("@", 1)[0]
        status = v.status.value + ("*" if v.expiring else "") + (" (warn)" if v.warn_only else "")
        table.add_row(
            f"[{_STYLE.get(v.status, 'red')}]{status}[/]",
            escape(ref),
            digest,
            escape(shown),
            escape(v.headline),
        )
    console.print(table)
    s = summary(result)
    counts = ", ".join(f"{k} {n}" for k, n in s["by_status"].items() if n)
    console.print(
        f"{s['images']} images in {s['containers']} containers: {counts}. "
        f"Compliant {s['compliant']}/{s['images']}" + (" (* expiring soon)" if s["expiring"] else "")
        + (f". Finding: {s['tag_references']} container(s) name a tag, not a digest" if s["tag_references"] else "")
    )
