"""URL credentials never become display text: labels, reasons, errors and log lines mask them, and the
facts that decisions use (identities, signers) are never rewritten."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from scanner.errors import ConfigError, StoreError
from scanner.models import (
    Check,
    CheckName,
    Outcome,
    ScanResult,
    ScanState,
    SignatureResult,
    Status,
    UnresolvedImage,
    Verdict,
)
from scanner.redact import display_url, install_log_redaction, redact_text

SECRET = "S3cret-9f1d"


@pytest.mark.parametrize("text, shown", [
    (f"https://user:{SECRET}@keys.example/k.pub", "https://***@keys.example/k.pub"),
    (f"https://ghp_{SECRET}@raw.example/k.pub", "https://***@raw.example/k.pub"),  # a token as the user
    (f"https://user:p@{SECRET}@h:8443/k", "https://***@h:8443/k"),  # an unencoded '@' in the password
    (f"grafeas+https://u:{SECRET}@g.example/v1beta1/projects/p", "grafeas+https://***@g.example/v1beta1/projects/p"),
    (f"key https://h/k.pub?X-Amz-Signature={SECRET}&X-Amz-Date=1 answered 404",
     "key https://h/k.pub?X-Amz-Signature=***&X-Amz-Date=1 answered 404"),
    (f"https://h/k?sv=1&sig={SECRET}", "https://h/k?sv=1&sig=***"),  # an Azure SAS
    (f"postgresql+psycopg://sigaudit:{SECRET}@db/x", "postgresql+psycopg://sigaudit:***@db/x"),
    (f"postgresql://sigaudit@db/x?password={SECRET}&sslmode=require",
     "postgresql://sigaudit@db/x?password=***&sslmode=require"),
])
def test_credentials_in_urls_are_masked(text: str, shown: str) -> None:
    assert redact_text(text) == shown
    assert redact_text(shown) == shown  # idempotent


@pytest.mark.parametrize("text", [
    "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0",  # a Fulcio SAN
    "https://host:8443/path@refs/heads/main",
    "signed by alice@example.com, issuer https://accounts.example.com",
    "annotation key=value is absent",
    "sqlite:////var/lib/a@b/sigaudit.db",
])
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_display_url_drops_the_userinfo_and_credential_parameters() -> None:
    assert display_url(f"https://u:{SECRET}@h:1/k.pub?token={SECRET}&v=2") == "https://***@h:1/k.pub?token=***&v=2"
    assert display_url("https://h/k.pub") == "https://h/k.pub"


def test_models_mask_prose_but_never_the_facts_decisions_use() -> None:
    url = f"https://u:{SECRET}@keys.example/k.pub"
    identity = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0"
    sig = SignatureResult(kind="cosign", verifier=f"cosign key {url}", outcome=Outcome.PASSED,
                          reason=f"signed with key {url}", signer=identity, identity=identity,
                          checks=(Check(CheckName.AUTHENTICITY, Outcome.PASSED, f"verifies with {url}"),))
    image = UnresolvedImage(None, "app", (), f"tag could not be resolved: {url}", notes=(f"note {url}",))
    verdict = Verdict(image, Status.ERROR, (f"reason {url}", "other"), signatures=(sig,))
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    result = ScanResult("c", now, now, ScanState.PARTIAL, (verdict,), "sha256:0", errors=(f"cannot read {url}",))
    shown = repr(result)
    assert SECRET not in shown and "https://***@keys.example/k.pub" in shown
    assert sig.identity == identity and sig.signer == identity  # revocations match these: untouched
    assert verdict.reasons == ("reason https://***@keys.example/k.pub", "other")


def test_error_messages_are_masked_wherever_they_are_shown() -> None:
    err = ConfigError(f"https://u:{SECRET}@h/k.pub: key URL answered 404", field=f"https://u:{SECRET}@h/k.pub")
    assert SECRET not in str(err) and SECRET not in err.diagnostics() and SECRET not in f"{err}"
    assert SECRET not in str(StoreError(f"cannot connect to postgresql://u@h/x?password={SECRET}"))


def test_key_url_labels_carry_no_credentials(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from scanner.policy.loader import PolicyLoader

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fetched: list[str] = []
    loader = PolicyLoader(key_fetcher=lambda url: fetched.append(url) or pem)
    url = f"https://u:{SECRET}@keys.example/k.pub?token={SECRET}"
    _, label = loader.load_key(url, tmp_path, "spec.rules.0")
    assert fetched == [url]  # the credential is still used to fetch the key
    assert SECRET not in label and label.startswith("https://***@keys.example/k.pub")


def test_grafeas_sources_with_credentials_are_refused_without_showing_them() -> None:
    """A Grafeas source with credentials in its URL is refused at load (exit 2: the token goes in
    SIGAUDIT_GRAFEAS_TOKEN), and the refusal itself never repeats the password."""
    from scanner.errors import ConfigError
    from scanner.verify.attestation import GrafeasClient, GrafeasEndpoint

    with pytest.raises(ConfigError) as info:
        GrafeasEndpoint.parse(f"grafeas+https://u:{SECRET}@grafeas.example/v1beta1/projects/p")
    assert SECRET not in str(info.value) and "grafeas.example" in str(info.value)
    plain = GrafeasClient(GrafeasEndpoint.parse("grafeas+https://grafeas.example/v1beta1/projects/p"), get=object())  # type: ignore[arg-type]
    assert plain.label == "https://grafeas.example/v1beta1/projects/p"


def test_log_records_are_masked_with_their_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("sigaudit.test.redact")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        logger.warning("fetching %s", f"https://u:{SECRET}@h/k.pub")
        try:
            raise RuntimeError(f"cannot reach https://u:{SECRET}@h/k.pub")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text and "fetching https://***@h/k.pub" in text
    assert "RuntimeError: cannot reach https://***@h/k.pub" in text


def test_a_failed_scans_errors_are_stored_masked(tmp_path: Path) -> None:
    """fail_scan takes the raw text of whatever stopped the scan (an exception from any library)."""
    from datetime import UTC, datetime

    from scanner.store import open_store, upgrade

    url = f"sqlite:///{tmp_path / 'sigaudit.db'}"
    upgrade(url)
    with open_store(url) as store:
        scan_id = store.begin_scan("c", datetime.now(UTC), "sha256:00", "test")
        store.fail_scan(scan_id, [f"scan failed: MaxRetryError: https://admin:{SECRET}@api.example:6443/api\x00"])
        errors = store.scan_summary(scan_id).errors
    assert errors == ("scan failed: MaxRetryError: https://***@api.example:6443/api\ufffd",)


@pytest.mark.parametrize("text", [
    "=?" + "key" * 100_000,  # a parameter name full of keywords, no '=' after it
    "a" * 300_000 + " ://=",  # a long word before a scheme separator that is not one
    ("a" * 29 + "://" + "b" * 4000 + " ") * 70,
    "x?" + ("a" * 127 + "&") * 2300 + "=",
])
def test_masking_stays_linear_on_hostile_text(text: str) -> None:
    """Reasons quote image strings a tenant writes, of any length: masking them must never hang. The bound is
    on this thread's CPU time, not the wall clock, so a loaded machine cannot fail it (the linear masking
    takes 0.03-0.15 CPU-s on these inputs here)."""
    import time

    started = time.thread_time()
    redact_text(text)
    assert time.thread_time() - started < 1.0
