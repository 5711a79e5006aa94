"""The evidence pack's KMS signers (scanner/sources/kms.py, scanner/evidence/dsse.KmsSigner) against
hand-made fakes of Cloud KMS, Azure Key Vault and Vault transit on 127.0.0.1 (tests/harness/fake_kms.py:
no real service or emulator of them can run here), driven through the real google-cloud-kms (REST
transport) and azure-keyvault-keys SDKs. A KMS that answers wrong — garbage, another key's signature,
another key version, a checksum that does not hold, an error status, a giant body, no answer — is a
KmsSigningError (exit 3), never a signature; a key that cannot sign in the pack's scheme is refused before
anything is signed (KmsKeyUnavailable, a ConfigError: exit 2)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scanner.errors import ConfigError
from scanner.evidence import dsse
from scanner.registry import deadline
from scanner.sources.kms import KmsEdge
from scanner.verify import kms
from tests.harness.fake_kms import FakeCloudKms, FakeKeyVault, FakeVault, PrivateKey, pem_of
from tests.harness.tools import _missing

GCP_KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/evidence"
TOKEN = "s.vault-token-never-shown"
ENTRA = "entra-access-token-never-shown"
GTOKEN = "ya29.google-access-token-never-shown"


def _sdk(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        _missing(f"{module} is not installed: pip install -e '.[test]'")
        raise AssertionError("unreachable") from None


P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
RSA = rsa.generate_private_key(65537, 2048)
ED = ed25519.Ed25519PrivateKey.generate()
OTHER = ec.generate_private_key(ec.SECP256R1())


@dataclass
class Kms:
    fake: Any
    ref: str
    edge: KmsEdge
    key: PrivateKey


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    started: list[Any] = []

    def go(provider: str, key: PrivateKey, *, versions: int = 1) -> Kms:
        older = ec.generate_private_key(ec.SECP256R1())
        if provider == "gcp":
            gkms = _sdk("google.cloud.kms")
            token = _sdk("google.oauth2.credentials").Credentials  # what Application Default Credentials yield
            fake: Any = FakeCloudKms({GCP_KEY: {**({1: older} if versions > 1 else {}), versions: key}})
            client = gkms.KeyManagementServiceClient(
                transport="rest", client_options={"api_endpoint": fake.url}, credentials=token(GTOKEN))
            started.append(fake)
            return Kms(fake, f"gcpkms://{GCP_KEY}", KmsEdge(gcp_client=client), key)
        if provider == "azure":
            _sdk("azure.keyvault.keys")
            access_token = _sdk("azure.core.credentials").AccessToken

            class Credential:  # what DefaultAzureCredential hands the SDK: an Entra ID token
                def get_token(self, *scopes: str, **kwargs: Any) -> Any:
                    return access_token(ENTRA, int(time.time()) + 3600)

            fake = FakeKeyVault({"evidence": {**({"0aa": older} if versions > 1 else {}), "1bb": key}}, tmp_path,
                                token=ENTRA)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_path))
            started.append(fake)
            return Kms(fake, f"azurekms://127.0.0.1:{fake.port}/evidence", KmsEdge(azure_credential=Credential()),
                       key)
        fake = FakeVault({"evidence": {**({1: older} if versions > 1 else {}), versions: key}}, TOKEN)
        monkeypatch.setenv("VAULT_ADDR", fake.url)
        monkeypatch.setenv("VAULT_TOKEN", TOKEN)
        started.append(fake)
        return Kms(fake, "hashivault://evidence", KmsEdge(), key)

    yield go
    for fake in started:
        fake.close()


CASES = [("gcp", P256), ("gcp", P384), ("gcp", RSA), ("azure", P256), ("azure", P384), ("azure", RSA),
         ("vault", P256), ("vault", P384), ("vault", RSA), ("vault", ED)]


@pytest.mark.parametrize(("provider", "key"), CASES, ids=[f"{p}-{type(k).__name__[:3]}{getattr(k, 'key_size', '')}"
                                                           for p, k in CASES])
def test_each_kms_signs_what_its_public_key_verifies_and_no_other_key_does(start: Any, provider: str,
                                                                          key: PrivateKey) -> None:
    k = start(provider, key, versions=2)  # the newest version signs, and is the one read
    signer = dsse.signer_from(k.ref, edge=k.edge)
    assert isinstance(signer, dsse.KmsSigner)
    assert signer.public_key_pem() == pem_of(key)
    assert signer.keyid == dsse.keyid_of(pem_of(key))
    for payload in (b"{}", b"x" * 10_000):  # small and beyond AWS' RAW limit: always the digest here
        env = dsse.sign_envelope("application/vnd.test+json", payload, signer)
        assert dsse.verify_envelope(env, pem_of(key)) == ("application/vnd.test+json", payload)
        with pytest.raises(dsse.EvidenceError, match="no DSSE signature verifies"):
            dsse.verify_envelope(env, pem_of(OTHER))


MODES = {
    "gcp": ["garbage", "other_key", "other_version", "bad_crc", "no_verified", "status", "giant", "echo"],
    "azure": ["garbage", "other_key", "other_version", "status", "giant", "echo"],
    "vault": ["garbage", "other_key", "other_version", "status", "giant", "echo"],
}
WHY = {
    "garbage": "does not verify|r\\|\\|s pair",
    "other_key": "does not verify",
    "other_version": "version|signed with|does not verify",
    "bad_crc": "signature_crc32c",
    "no_verified": "digest_crc32c",
    "status": "500|HttpResponseError|InternalServerError|ServiceUnavailable",
    "echo": "500|HttpResponseError|InternalServerError",
    "giant": "more than|too large|no key name|no signature",  # the SDKs drop the unknown member, no signature left
}


@pytest.mark.parametrize(("provider", "mode"), [(p, m) for p, ms in MODES.items() for m in ms])
def test_a_kms_answering_wrong_is_an_error_never_a_signature(start: Any, provider: str, mode: str) -> None:
    k = start(provider, P256)
    signer = dsse.signer_from(k.ref, edge=k.edge)
    k.fake.misbehave = mode
    with pytest.raises(dsse.KmsSigningError) as err:  # the KMS failed, not the configuration: exit 3
        dsse.sign_envelope("application/vnd.test+json", b"{}", signer)
    assert not isinstance(err.value, ConfigError)
    assert k.ref in str(err.value)
    import re

    assert re.search(WHY[mode], str(err.value)), err.value
    for secret in (TOKEN, ENTRA, GTOKEN):
        assert secret not in str(err.value)
    if mode == "echo" and provider != "vault":  # the SDK quoted the body repeating the credential, masked
        assert "[redacted]" in str(err.value), err.value


@pytest.mark.parametrize("provider", ["gcp", "azure", "vault"])
def test_a_kms_that_does_not_answer_is_cut_at_the_deadline(start: Any, provider: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    k = start(provider, P256)
    signer = dsse.signer_from(k.ref, edge=k.edge)
    k.fake.misbehave = "hang"
    monkeypatch.setattr(kms, "KMS_TOTAL_TIMEOUT_SECONDS", 2.0)
    began = time.monotonic()
    with pytest.raises(dsse.KmsSigningError, match="within 2s"):
        signer.sign(b"data")
    assert time.monotonic() - began < 6
    # an earlier deadline of the command (scan --deadline) wins, with its words
    monkeypatch.setattr(kms, "KMS_TOTAL_TIMEOUT_SECONDS", 30.0)
    began = time.monotonic()
    with deadline.within(time.monotonic() + 1.5, "scan deadline reached"), \
            pytest.raises(dsse.KmsSigningError, match="scan deadline reached"):
        signer.sign(b"data")
    assert time.monotonic() - began < 6


def test_keys_whose_signatures_the_pack_cannot_carry_are_refused_before_signing(start: Any) -> None:
    # Cloud KMS RSA-PSS: cosign and slsa-verifier verify a PEM RSA key as PKCS#1 v1.5; P-521: not a DSSE key here
    k = start("gcp", RSA)
    k.fake.algorithm[f"{GCP_KEY}/cryptoKeyVersions/1"] = "RSA_SIGN_PSS_2048_SHA256"
    with pytest.raises(kms.KmsKeyUnavailable, match="RSA_SIGN_PSS_2048_SHA256"):  # a ConfigError: exit 2
        dsse.signer_from(k.ref, edge=k.edge)
    assert not [r for r in k.fake.requests if ":asymmetricSign" in r[1]]
    k2 = start("vault", ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(ConfigError, match="secp521r1"):
        dsse.signer_from(k2.ref, edge=k2.edge)


def test_the_vault_token_goes_only_to_vault_and_never_into_a_message(start: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    k = start("vault", P256)
    dsse.sign_envelope("application/vnd.test+json", b"{}", dsse.signer_from(k.ref))
    assert all(r[2].get("X-Vault-Token") == TOKEN for r in k.fake.requests)
    monkeypatch.setenv("VAULT_TOKEN", "s.wrong-token")
    with pytest.raises(kms.KmsKeyUnavailable) as err:
        dsse.signer_from(k.ref)
    assert "403" in str(err.value) and "s.wrong-token" not in str(err.value)


@pytest.mark.parametrize("provider", ["gcp", "azure", "vault"])
def test_a_credential_the_kms_echoes_alone_is_masked_too(start: Any, provider: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The error body repeats the access token bare ("credential ya29.… expired"): no "Bearer", no "token:"
    # before it, not a JWT (Google's tokens are opaque) — only knowing what was sent can mask it.
    from scanner.sources import kms as edge

    monkeypatch.setattr(edge, "_HANDED", set(), raising=False)  # nothing remembered from earlier tests
    k = start(provider, P256)
    signer = dsse.signer_from(k.ref, edge=k.edge)
    k.fake.misbehave = "echo_bare"
    with pytest.raises(dsse.KmsSigningError) as err:
        dsse.sign_envelope("application/vnd.test+json", b"{}", signer)
    for secret in (TOKEN, ENTRA, GTOKEN):
        assert secret not in str(err.value), err.value
    if provider != "vault":  # Vault's errors name the status only
        assert "credential [redacted] expired" in str(err.value), err.value


@pytest.mark.parametrize("token", ["s.first-line-secret\ns.second-line-secret", "s.first-part\x01s.second-part",
                                   "s.first-part s.second-part"])
def test_a_vault_token_that_is_no_header_value_is_refused_unsent_and_unshown(start: Any, token: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A token file of two lines: HTTP refused the header and its error quoted the whole token (b'…\n…').
    k = start("vault", P256)
    monkeypatch.setenv("VAULT_TOKEN", token)
    with pytest.raises(kms.KmsKeyUnavailable, match="not one line of printable ASCII") as err:
        dsse.signer_from(k.ref)
    for part in token.replace("\x01", " ").split():
        assert part.split(".", 1)[1] not in str(err.value), err.value
    assert not k.fake.requests  # nothing was sent


@pytest.mark.parametrize("provider", ["gcp", "azure", "vault"])
def test_a_kms_redirecting_to_another_host_gets_no_credential_there(start: Any, provider: str) -> None:
    import socket
    import threading

    seen: list[bytes] = []
    other = socket.socket()
    other.bind(("127.0.0.2", 0))  # another host
    other.listen(5)

    def serve() -> None:
        while True:
            try:
                conn, _ = other.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                try:
                    seen.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    k = start(provider, P256)
    signer = dsse.signer_from(k.ref, edge=k.edge)
    k.fake.misbehave, k.fake.location = "redirect", f"http://127.0.0.2:{other.getsockname()[1]}/elsewhere"
    try:
        with pytest.raises(dsse.KmsSigningError) as err:
            dsse.sign_envelope("application/vnd.test+json", b"{}", signer)
    finally:
        other.close()
    for secret in (TOKEN, ENTRA, GTOKEN):
        assert not [s for s in seen if secret.encode() in s] and secret not in str(err.value)


@pytest.mark.parametrize("provider", ["vault", "azure"])
def test_an_answer_that_inflates_to_hundreds_of_mib_is_refused_uninflated(start: Any, provider: str) -> None:
    # A few hundred bytes, Content-Encoding "gzip, gzip": httpx (Vault) inflated each network chunk whole,
    # layer on layer, so the 1 MiB cap saw the answer only after 256 MiB had been allocated; the Key
    # Vault SDK read the whole inflated body (1 GiB at its peak) with no cap at all.
    import tracemalloc

    k = start(provider, P256)
    signer = dsse.signer_from(k.ref, edge=k.edge)
    k.fake.misbehave = "bomb"
    tracemalloc.start()
    try:
        with pytest.raises(dsse.KmsSigningError, match=r"encoded body|more than"):
            signer.sign(b"data")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak


@pytest.mark.parametrize("provider", ["gcp", "azure", "vault"])
def test_a_credential_the_kms_answers_in_a_field_the_checks_quote_is_masked(start: Any, provider: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The answer names the credential where the key version / kid / key name belongs: the check that
    # refuses it quoted the field as it came ("the KMS signed with 'ya29.…'").
    from scanner.sources import kms as edge

    monkeypatch.setattr(edge, "_HANDED", set(), raising=False)
    k = start(provider, P256)
    if provider != "gcp":  # the key name / kid is quoted when the key is read (Cloud KMS: when it signs)
        k.fake.misbehave = "echo_field"
        with pytest.raises(kms.KmsKeyUnavailable) as refused:
            dsse.signer_from(k.ref, edge=k.edge)
        err: Exception = refused.value
    else:
        signer = dsse.signer_from(k.ref, edge=k.edge)
        k.fake.misbehave = "echo_field"
        with pytest.raises(dsse.KmsSigningError) as failed:
            dsse.sign_envelope("application/vnd.test+json", b"{}", signer)
        err = failed.value
    assert "[redacted]" in str(err), err
    for secret in (TOKEN, ENTRA, GTOKEN):
        assert secret not in str(err), err


def test_a_plain_http_vault_on_this_machine_is_never_reached_through_a_proxy(start: Any,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # HTTP_PROXY set for the cluster: httpx sent GET http://127.0.0.1:…/v1/transit/keys/… with the token
    # in clear text to the proxy's host; Vault's own client never proxies loopback.
    import socket
    import threading

    seen: list[bytes] = []
    proxy = socket.socket()
    proxy.bind(("127.0.0.2", 0))  # another host
    proxy.listen(5)

    def serve() -> None:
        while True:
            try:
                conn, _ = proxy.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                try:
                    seen.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 502 x\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    k = start("vault", P256)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.2:{proxy.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        env = dsse.sign_envelope("application/vnd.test+json", b"{}", dsse.signer_from(k.ref))
    finally:
        proxy.close()
    assert dsse.verify_envelope(env, pem_of(P256))
    assert not seen, seen
