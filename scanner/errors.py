"""One base error with a human ``diagnostics()``; typed subclasses per failure class."""

from __future__ import annotations

from scanner.redact import redact_text


class SigauditError(Exception):
    """Base class of every error sigaudit raises on purpose.

    Its text never carries a URL credential (``scheme://user:password@…``, ``?token=…``): whatever
    message a raiser builds, ``str()`` — and so ``diagnostics()``, ``f"{exc}"`` and a traceback —
    shows it masked (:func:`scanner.redact.redact_text`)."""

    def __str__(self) -> str:
        return redact_text(super().__str__())

    def diagnostics(self) -> str:
        return str(self)


class ConfigError(SigauditError):
    """Bad policy, bad flags, unreadable key: the user must fix input. CLI exit 2."""

    def __init__(
        self, message: str, *, source: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.source, self.line, self.field = source, line, field
        where = source or ""
        if line is not None:
            where += f":{line}"
        if field:
            where += f" ({field})" if where else field
        super().__init__(f"{where}: {message}" if where else message)


class ParseError(SigauditError):
    """Untrusted bytes that are not what they claim to be (manifest, envelope, pod list, ...)."""


class LimitExceeded(ParseError):
    """Untrusted input larger or deeper than a configured bound."""


class RegistryError(SigauditError):
    """A registry request failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, registry: str = "", status: int | None = None) -> None:
        self.registry, self.status = registry, status
        super().__init__(message)


class NotFound(RegistryError):
    """The registry answered 404 for a manifest/tag/blob."""


class InventoryError(SigauditError):
    """The pod inventory could not be read completely. CLI exit 3."""


class StoreError(SigauditError):
    """The database is unreachable or refused the scan. CLI exit 3."""


class StoreFull(StoreError):
    """The disk holding the database (or its size limit) is full: ``sigaudit db prune`` makes room."""


class ScanInProgress(StoreError):
    """Another scan for the same cluster is running."""


class DeadlineReached(SigauditError):
    """A command's deadline (``--deadline``) passed while something it needs was still being read (a
    policy's key URL, KMS key or trusted root); it names what, never a credential. CLI exit 3."""
