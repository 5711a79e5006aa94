"""The command-line options of a scan, defined once for every face that runs scans.

``sigaudit scan`` and ``sigaudit serve`` both decorate their command with :func:`scan_options` and
turn the parsed values into a :class:`~scanner.scan.ScanOptions` with :func:`scan_options_from`: a
scan option added here exists in both commands, with the same default and the same
``SIGAUDIT_<OPTION>`` environment variable (the commands' ``auto_envvar_prefix``), and reaches the
one scan use case (:mod:`scanner.scan`). Face-only options (outputs, ``--listen``, ``--schedule``,
...) stay with their command.

This module is shared by the faces and imports none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import click

from scanner.scan import Retention, ScanOptions

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


def duration(_ctx: click.Context | None, _param: click.Parameter | None, value: str | None) -> float | None:
    """A click callback: seconds, or a Go-style duration: ``300``, ``90s``, ``10m``, ``1h30m``."""
    if value is None or value == "":
        return None
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise click.BadParameter(f"{value!r} is not a duration (e.g. 300, 90s, 10m, 1h30m)") from None
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not 0 < seconds < 10 * 365 * 86400:
        raise click.BadParameter(f"{value!r} must be a positive duration")
    return seconds


# ASCII digits, a bounded number of them: int() reads other scripts' digits, and more than 4,300 digits
# raised ValueError (an unexpected failure, exit 3) where a usage error belongs.
_AGE = re.compile(r"([0-9]{1,12})(y|w|d|h)")
_AGE_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600}


def age(_ctx: click.Context | None, _param: click.Parameter | None, value: str | None) -> timedelta | None:
    """A click callback: how long to keep scans, ``90d``, ``12w``, ``1y``, ``36h`` (or ``1y6w``)."""
    if value is None or value == "":
        return None
    text = value.strip().lower()
    parts = _AGE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(f"{value!r} is not an age (e.g. 90d, 12w, 1y, 36h)")
    seconds = sum(int(n) * _AGE_UNITS[u] for n, u in parts)
    if not 3600 <= seconds <= 100 * 365 * 86400:
        raise click.BadParameter(f"{value!r}: keep at least 1h and at most 100y")
    return timedelta(seconds=seconds)


_SIZE = re.compile(r"([0-9]{1,19})(ki|mi|gi|ti|k|m|g|t|)b?")  # ASCII digits, bounded (as _AGE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def size(_ctx: click.Context | None, _param: click.Parameter | None, value: str | None) -> int | None:
    """A click callback: bytes, or a Kubernetes quantity (``50Gi``, ``500Mi``, ``2T``; ``GB`` = ``G``)."""
    if value is None or value == "":
        return None
    m = _SIZE.fullmatch(value.strip().lower())
    if m is None:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 50Gi, 500Mi, 2T, or bytes)")
    n = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if not 64 * 2**20 <= n <= 2**60:
        raise click.BadParameter(f"{value!r}: a database capacity is at least 64Mi")
    return n


def _envvars(decls: tuple[str, ...]) -> list[str]:
    """``SIGAUDIT_<OPTION>`` after the long flag (``--policy`` → ``SIGAUDIT_POLICY``, ``-n/--namespace`` →
    ``SIGAUDIT_NAMESPACE``), as the README promises; click's automatic name, after the parameter's name
    (``SIGAUDIT_POLICY_PATH``), is still read when it differs."""
    flag = next(d for d in decls if d.startswith("--")).split("/")[0]
    names = [f"SIGAUDIT_{flag[2:].replace('-', '_').upper()}"]
    param = next((d for d in decls if not d.startswith("-")), None)
    if param is not None and f"SIGAUDIT_{param.upper()}" not in names:
        names.append(f"SIGAUDIT_{param.upper()}")
    return names


def _option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*decls, envvar=_envvars(decls), show_envvar=True, **kwargs)


def scan_options(*, serve: bool = False) -> Callable[[F], F]:
    """Add every option of :class:`~scanner.scan.ScanOptions` to a click command (``serve``: the
    pods file is re-read at every scan, so it cannot be stdin)."""
    pods_help = ("`kubectl get pods -A -o json` output, re-read at every scan, instead of the live API." if serve
                 else "`kubectl get pods -A -o json` output ('-' for stdin) instead of the live API.")
    options = [
        _option("--policy", "policy_path", type=click.Path(dir_okay=False), help="AuditPolicy file (YAML)."),
        _option(
            "--policy-from",
            "policy_from",
            multiple=True,
            help="Import policies: kyverno:FILE|cluster, clusterimagepolicy:FILE|cluster, kritis:FILE|cluster, "
            "notation:DIR|cluster.",
        ),
        _option("--pods-file", type=click.Path(dir_okay=False, allow_dash=not serve), help=pods_help),
        _option("-n", "--namespace", "namespaces", multiple=True,
                     help="Only these namespaces (repeatable, globs)."),
        _option("--exclude-namespace", "exclude_namespaces", multiple=True, help="Skip these namespaces (globs)."),
        _option("--kubeconfig", type=click.Path(dir_okay=False), default=None, help="kubeconfig file."),
        _option("--context", default=None, help="kubeconfig context."),
        _option("--cluster", default="default", help="Cluster name recorded with the scans."),
        _option(
            "--docker-config",
            type=click.Path(dir_okay=False),
            default=None,
            help="Docker config.json with registry credentials (default: $DOCKER_CONFIG or ~/.docker).",
        ),
        _option(
            "--pull-secrets/--no-pull-secrets",
            default=False,
            help="Read the pods' imagePullSecrets through the API for registry credentials.",
        ),
        _option(
            "--registry-auth",
            "registry_auth",
            multiple=True,
            help="More registry credential sources, comma-separated: helpers (the docker config's "
            "credHelpers/credsStore), ecr, gcr, acr (the workload's cloud identity, for that cloud's registry "
            "hosts), PROVIDER=HOST (a provider for another host: a mirror, a private endpoint). Tried after the "
            "pods' pull secrets and the docker config's auths, in that order.",
        ),
        _option("--concurrency", type=click.IntRange(1, 256), default=32, help="Images verified at once."),
        _option("--registry-concurrency", type=click.IntRange(1, 256), default=32,
                     help="Requests per registry at once."),
        _option("--registry-budget", type=click.IntRange(min=0), default=None,
                     help="At most N manifest GETs per registry per scan (pull-rate limits count these; HEADs are "
                          "free); images beyond it get an error verdict."),
        _option("--page-size", type=click.IntRange(1, 5000), default=500, help="Pods per API list page."),
        _option("--deadline", callback=duration, default=None,
                     help="Stop a scan after this long (e.g. 300, 10m): images not judged by then get an error "
                          "verdict and the scan is partial" + ("." if serve else " (exit 3).")),
        _option("--retention", callback=age, default=None,
                help="After each successful scan, delete the detail of this cluster's scans older than this "
                     "(e.g. 90d; the newest complete scan and every scan's summary for the trend are kept), as "
                     "`sigaudit db prune --keep` does. Default: keep everything."),
        _option("--db-capacity", "db_capacity", callback=size, default=None,
                help="The size the database may reach (e.g. 50Gi: PostgreSQL's volume less its WAL; sigaudit cannot "
                     "see the server's disk). Past 80% a scan warns; within 32 MiB of it a scan is refused (exit 3, "
                     "saying `sigaudit db prune`) before its write could fail; sigaudit_store_capacity_bytes "
                     "exports it. A SQLite file's volume is measured as well. Default: not declared."),
        _option("--notify", "notify_path", type=click.Path(dir_okay=False), default=None,
                help="Notification receivers (YAML: webhook, slack, alertmanager): after each scan, the violations "
                     "that appeared since the previous complete scan are sent once. Needs the database."),
        _option("--cache/--no-cache", default=True,
                     help="Reuse verification results across scans (keyed by digest, trust material and the "
                          "signatures attached; revocation and expiry are re-checked every scan)."),
        _option("--recheck-after", callback=duration, default=None,
                help="Re-check window (e.g. 1h; default off): an image whose cached pass was re-listed within "
                     "it is judged from the cache without any registry request; no verdict rests on a re-list "
                     "older than the window (re-lists are spread over the scans). Expiry and revocation are still "
                     "judged every scan; a signature removed inside the window is noticed only at the next re-list "
                     "(up to one window plus one scan interval later). Needs the cache."),
        _option("--evidence-layouts/--no-evidence-layouts", "image_manifests", default=False,
                help="Also keep each newly verified image's own manifest, so that evidence packs of these scans "
                     "(`sigaudit evidence`) hold OCI layouts the upstream cosign and notation verify offline: one "
                     "more manifest GET per newly verified image, never under --registry-budget. `scan "
                     "--evidence` turns it on."),
        _option("--reports", "cluster_reports", type=click.Choice(["openreports", "policyreport"]), default=None,
                help="After each scan, server-side apply its results as policy reports (openreports.io Report / "
                     "ClusterReport, or wgpolicyk8s.io/v1alpha2 PolicyReport) and delete sigaudit's stale ones."),
    ]

    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def scan_options_from(params: Mapping[str, Any]) -> ScanOptions:
    """The :class:`~scanner.scan.ScanOptions` of a command's parsed parameters."""
    if params.get("recheck_after") is not None and not params["cache"]:
        raise click.UsageError("--recheck-after judges from the verification cache: drop --no-cache")
    return ScanOptions(
        cluster=params["cluster"],
        policy_path=params["policy_path"],
        policy_from=tuple(params["policy_from"]),
        pods_file=params["pods_file"],
        namespaces=tuple(params["namespaces"]),
        exclude_namespaces=tuple(params["exclude_namespaces"]),
        kubeconfig=params["kubeconfig"],
        context=params["context"],
        docker_config=params["docker_config"],
        pull_secrets=params["pull_secrets"],
        registry_auth=tuple(params["registry_auth"]),
        concurrency=params["concurrency"],
        registry_concurrency=params["registry_concurrency"],
        registry_budget=params["registry_budget"],
        page_size=params["page_size"],
        deadline=params["deadline"],
        cache=params["cache"],
        recheck_after=params.get("recheck_after"),
        retention=Retention(keep=params["retention"]) if params.get("retention") is not None else None,
        notify_path=params.get("notify_path"),
        cluster_reports=params.get("cluster_reports"),
        image_manifests=bool(params.get("image_manifests", False)),
        db_capacity=params.get("db_capacity"),
    )
