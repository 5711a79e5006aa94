"""Credentials never become display text.

A URL from the configuration (a key URL, a Grafeas endpoint, a Pushgateway, a database) may carry a
credential: ``https://user:password@host/…`` (or a token alone as the user), or a query parameter
such as ``?password=…``, ``?token=…``, a presigned URL's ``X-Amz-Signature=…``, an Azure SAS
``sig=…``. Whatever shows a URL to a person — a label in a verdict's reasons, an error message, a
log line — shows :func:`display_url` of it, and every message sigaudit writes passes through
:func:`redact_text`, so a label built from a raw URL in a verifier written next year is still masked
before it reaches a reason, the database, a report, metrics, a log or an API response.

Pure string functions; no I/O.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# scheme://AUTHORITY where the authority (up to the first / ? # or whitespace) holds an '@': everything
# up to its last '@' is userinfo (an unencoded '@' in a password must not end the mask early). The
# scheme is bounded, and the parameter name below too, so that matching stays linear in the text
# (reasons quote tenants' image strings, of any length).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]{0,30}://)(?P<userinfo>[^/?#\s]*)@")
# A query parameter whose name says it carries a credential: password, pwd, pass, secret, token (access_,
# refresh_, private_, X-Amz-Security-Token), auth, key (apikey, api_key), sig/signature (Azure SAS,
# X-Amz-Signature), credential (X-Amz-Credential), session.
_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[\w.\-]{1,128})=)(?P<value>[^&#\s'\"]*)")
_CREDENTIAL_NAME = re.compile(r"pass|pwd|secret|token|auth|key|sig|credential|session", re.IGNORECASE)


_DATABASE_SCHEMES = ("postgresql", "postgres", "sqlite")


def _userinfo(m: re.Match[str]) -> str:
    scheme = m.group("scheme")
    user, sep, _ = m.group("userinfo").partition(":")
    if scheme.lower().split("+", 1)[0].removesuffix("://") in _DATABASE_SCHEMES and "@" not in user:
        # A database user is a role name (the server's own messages print it): keep it, hide the password.
        return f"{scheme}{user}{':' + MASK if sep else ''}@"
    # Elsewhere the user alone may be the credential (https://<token>@host, <token>:x-oauth-basic).
    return f"{scheme}{MASK}@"


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact_text` of UTF-8 ``data`` (a policy file, a trust document) as bytes; ``data`` itself
    when nothing is masked or it is not UTF-8 text (keys, certificates)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    shown = redact_text(text)
    return data if shown == text else shown.encode("utf-8")


def redact_text(text: str) -> str:
    """``text`` with every URL credential masked: the userinfo of ``scheme://userinfo@host`` (a user
    alone may be a token; a database URL keeps its role name) and the values of credential-like query
    parameters. Idempotent."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(_userinfo, text)
    return _PARAM.sub(_param, text)


def _param(m: re.Match[str]) -> str:
    if m.group("value") and _CREDENTIAL_NAME.search(m.group("name")):
        return m.group("lead") + MASK
    return m.group(0)


_UNREPRESENTABLE = re.compile("[\x00\ud800-\udfff]")


def representable(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD: what every output can carry (a lone
    surrogate, e.g. from ``"\\ud800"`` in a registry's JSON, is not UTF-8 and breaks any encoder;
    PostgreSQL text refuses NUL)."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNREPRESENTABLE.sub("\ufffd", text)


def display_url(url: str) -> str:
    """One configured URL as it may be shown: no userinfo, credential-like query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=f"{MASK}@{parts.netloc.rpartition('@')[2]}")
    return redact_text(urlunsplit(parts))


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in every record it lets through (message and args
    are formatted first, so a URL passed as an argument is masked too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as it would
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Tracebacks name the exception's message; format it here so it can be masked.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# The cloud SDKs log whole HTTP bodies and headers at DEBUG (botocore: the GetAuthorizationToken reply,
# the STS request carrying the web identity token, X-Amz-Security-Token), so `-vv` would print the
# secrets they fetch. Their loggers are held at WARNING by the CLI and whenever a credential resolver
# runs, whatever the root level (found by the secrets scan of tests/integration/test_secrets_scan.py).
SDK_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "google", "google_auth_httplib2", "azure", "msal")


def quiet_sdk_loggers() -> None:
    """Hold the cloud SDKs' loggers at WARNING (they never log a secret-bearing line then)."""
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:  # NOTSET (0) too: it would inherit the root's DEBUG
            logger.setLevel(logging.WARNING)


__all__ = [
    "MASK", "SDK_LOGGERS", "RedactingFilter", "display_url", "install_log_redaction", "quiet_sdk_loggers",
    "redact_text", "representable",
]
