"""The caller's deadline over the remote reads of a policy load (key URLs, KMS public keys, the
Sigstore trusted root, the Kubernetes reads of ``--policy-from KIND:cluster``).

One place gives a policy load its deadline: :func:`policy_load`, entered by
``scanner.policy.sources.load_policies`` with the command's ``--deadline`` (``scan``, ``serve``'s scans,
``check-policy``). One place enforces it: every read of remote trust material goes through
``scanner.verify.sources.fetched``, which runs the read here (:func:`read`), so a key source added later
is cut at the deadline too, whatever its own limits (a key URL's 30 s, a KMS call's 30 s, an SDK's
retries, a name lookup that never answers). A read cut there is a :class:`DeadlineReached` (exit 3)
naming the source, never a configuration error: the policy was not wrong, it was not read in time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from scanner.errors import ConfigError, DeadlineReached, SigauditError
from scanner.redact import redact_text
from scanner.registry import deadline as deadlines

POLICY_LOAD = "deadline reached while the policy was loaded"
# How long past the deadline a read bounded by it itself (a key URL's sockets, a KMS call, the Kubernetes
# client) may take to end with its own words before it is abandoned (as registry.auth._GRACE).
GRACE = 0.5
_WHAT = {"url": "key URL", "kms": "KMS key", "sigstore": "Sigstore trust root", "kube": "Kubernetes API read",
         "kube-secret": "Kubernetes secret"}


@contextmanager
def policy_load(at: float | None) -> Iterator[None]:
    """Every remote read of the policy load in this block ends by ``at`` (a ``time.monotonic()`` value;
    None: only by its own limits)."""
    with deadlines.within(at, POLICY_LOAD):
        yield


def shown(ref: str) -> str:
    """A source as a message may name it: no userinfo, no query (a signed URL's query is its credential),
    no fragment, and whatever else looks like a credential masked."""
    try:
        parts = urlsplit(ref)
    except ValueError:
        return redact_text(ref)[:300]
    if not parts.scheme or not parts.netloc:
        return redact_text(ref)[:300]
    host = parts.netloc.rpartition("@")[2]
    return redact_text(urlunsplit((parts.scheme, host, parts.path, "..." if parts.query else "", "")))[:300]


def read(kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
    """``fetch()`` (the read of ``ref``) ended by the deadlines in force on this thread as well as by its
    own limits, whichever comes first. Past a deadline, its failure is :class:`DeadlineReached` naming
    ``ref`` as :func:`shown`; an error the read raised on its own that is already an operational one
    (the Kubernetes reads' InventoryError, exit 3 with its own words) is kept."""
    what = f"{_WHAT.get(kind, kind)} {shown(ref)}"
    try:
        return deadlines.run(fetch, grace=GRACE)
    except deadlines.Abandoned as exc:
        raise DeadlineReached(f"{exc}: {what} was not read") from None
    except Exception as exc:
        words = deadlines.expired()
        if words is None or (isinstance(exc, SigauditError) and not isinstance(exc, ConfigError)):
            raise
        # Its own "no answer within 30 s", a KMS' KmsKeyUnavailable: the deadline cut it (never exit 2, and
        # never a KMS outage that would only make the images this key judges `error`).
        raise DeadlineReached(f"{words}: {what} was not read") from exc
