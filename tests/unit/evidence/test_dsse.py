"""DSSE envelopes: the spec's PAE and worked example, round trips for every key type, and what a
verifier must refuse (flipped bytes, another key, another payload type, malformed envelopes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scanner.errors import ConfigError
from scanner.evidence import dsse
from scanner.evidence.dsse import EvidenceError

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors" / "dsse"


def _pem(key: object) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption())


KEYS = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


@pytest.fixture(params=sorted(KEYS))
def signer(request: pytest.FixtureRequest, tmp_path: Path) -> dsse.Signer:
    (tmp_path / "key.pem").write_bytes(_pem(KEYS[request.param]()))
    return dsse.signer_from("key.pem", tmp_path)


def test_pae_matches_the_spec_example() -> None:
    doc = json.loads((VECTORS / "protocol-example.json").read_text())
    assert dsse.pae(doc["payloadType"], doc["payload_utf8"].encode()) == doc["pae_utf8"].encode()


def test_pae_counts_bytes_not_characters_and_signs_an_empty_body() -> None:
    assert dsse.pae("application/vnd.exämple+json", b"{}") == "DSSEv1 29 application/vnd.exämple+json 2 {}".encode()
    assert dsse.pae("t", b"") == b"DSSEv1 1 t 0 "


def _spec_key_pem(doc: dict) -> bytes:
    nums = ec.EllipticCurvePublicNumbers(int(doc["key"]["x"]), int(doc["key"]["y"]), ec.SECP256R1())
    return nums.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_vector_cases_are_the_ones_tested_here() -> None:
    cases = json.loads((VECTORS / "cases.json").read_text())["protocol_example"]["cases"]
    assert [(c["id"], c["expected"]) for c in cases] == [
        ("protocol-example", "pass"), ("protocol-example-signature-bit-flipped", "fail"),
        ("protocol-example-payload-changed", "fail")]


def test_the_spec_example_envelope_verifies_and_a_flipped_byte_does_not() -> None:
    doc = json.loads((VECTORS / "protocol-example.json").read_text())
    pem = _spec_key_pem(doc)
    assert dsse.verify_envelope(doc["envelope"], pem) == ("http://example.com/HelloWorld", b"hello world")
    sig = bytearray(base64.b64decode(doc["envelope"]["signatures"][0]["sig"]))
    sig[10] ^= 1
    bad = {**doc["envelope"], "signatures": [{"sig": base64.b64encode(bytes(sig)).decode()}]}
    with pytest.raises(EvidenceError):
        dsse.verify_envelope(bad, pem)
    other = {**doc["envelope"], "payload": base64.b64encode(b"hello worle").decode()}
    with pytest.raises(EvidenceError):
        dsse.verify_envelope(other, pem)


def test_round_trip_for_every_key_type(signer: dsse.Signer) -> None:
    env = dsse.sign_envelope("application/vnd.in-toto+json", b'{"a":1}', signer)
    assert env["signatures"][0]["keyid"] == signer.keyid == dsse.keyid_of(signer.public_key_pem())
    assert dsse.verify_envelope(env, signer.public_key_pem()) == ("application/vnd.in-toto+json", b'{"a":1}')
    assert dsse.verify_envelope(json.dumps(env).encode(), signer.public_key_pem(),
                                payload_type="application/vnd.in-toto+json")[1] == b'{"a":1}'


def test_tampering_is_refused(signer: dsse.Signer) -> None:
    pem = signer.public_key_pem()
    env = dsse.sign_envelope("application/vnd.in-toto+json", b'{"passed":false}', signer)
    cases = [
        {**env, "payload": base64.b64encode(b'{"passed":true}').decode()},  # another payload
        {**env, "payloadType": "application/json"},  # another type, same signature
        {**env, "signatures": []},
        {**env, "signatures": [{"sig": ""}]},
        {**env, "signatures": [{"keyid": signer.keyid}]},
        {**env, "payload": env["payload"] + "!"},
        {**env, "payload": 5},
        {k: v for k, v in env.items() if k != "payloadType"},
        {**env, "payloadType": ""},
    ]
    for case in cases:
        with pytest.raises(EvidenceError):
            dsse.verify_envelope(case, pem)
    raw = bytearray(json.dumps(env).encode())
    for i in range(0, len(raw), 7):  # a flipped byte anywhere: refused (or still the same statement)
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        try:
            got = dsse.verify_envelope(bytes(flipped), pem)
        except EvidenceError:
            continue
        assert got == ("application/vnd.in-toto+json", b'{"passed":false}')
    with pytest.raises(EvidenceError):
        dsse.verify_envelope(env, pem, payload_type="application/json")


def test_another_key_is_refused_and_keyid_picks_nothing(signer: dsse.Signer, tmp_path: Path) -> None:
    env = dsse.sign_envelope("t", b"x", signer)
    (tmp_path / "other.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    other = dsse.signer_from(str(tmp_path / "other.pem"))
    with pytest.raises(EvidenceError):
        dsse.verify_envelope(env, other.public_key_pem())
    # The right keyid on the wrong key's signature does not help either.
    forged = dsse.sign_envelope("t", b"x", other)
    forged["signatures"][0]["keyid"] = signer.keyid
    with pytest.raises(EvidenceError):
        dsse.verify_envelope(forged, signer.public_key_pem())


def test_a_second_signature_by_the_key_is_enough_but_only_the_key_counts(signer: dsse.Signer, tmp_path: Path) -> None:
    (tmp_path / "o.pem").write_bytes(_pem(ed25519.Ed25519PrivateKey.generate()))
    other = dsse.signer_from(str(tmp_path / "o.pem"))
    a = dsse.sign_envelope("t", b"x", other)
    b = dsse.sign_envelope("t", b"x", signer)
    both = {**a, "signatures": a["signatures"] + b["signatures"]}
    assert dsse.verify_envelope(both, signer.public_key_pem()) == ("t", b"x")


def test_url_safe_base64_is_accepted(signer: dsse.Signer) -> None:
    payload = b"\xfb\xff\xbf>?"  # base64 with + and / in the standard alphabet
    env = dsse.sign_envelope("t", payload, signer)
    url = {**env, "payload": base64.urlsafe_b64encode(payload).decode().rstrip("="),
           "signatures": [{"sig": base64.urlsafe_b64encode(base64.b64decode(env["signatures"][0]["sig"])).decode()}]}
    assert dsse.verify_envelope(url, signer.public_key_pem()) == ("t", payload)


@pytest.mark.parametrize("blob", [b"", b"[]", b"null", b"{", b'{"payloadType":"t"}', b"\xff" * 10, b"[" * 100_000])
def test_malformed_envelopes_are_evidence_errors(blob: bytes, tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    pem = dsse.signer_from("k.pem", tmp_path).public_key_pem()
    with pytest.raises(EvidenceError):
        dsse.verify_envelope(blob, pem)


def test_too_many_signatures_are_refused(signer: dsse.Signer) -> None:
    env = dsse.sign_envelope("t", b"x", signer)
    many = {**env, "signatures": env["signatures"] * (dsse.MAX_SIGNATURES + 1)}
    with pytest.raises(EvidenceError, match="more than"):
        dsse.verify_envelope(many, signer.public_key_pem())


def test_signer_from_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==\n-----END PRIVATE KEY-----\n"
    (tmp_path / "bad.pem").write_bytes(secret)
    with pytest.raises(ConfigError) as err:
        dsse.signer_from("bad.pem", tmp_path)
    assert "c2VjcmV0" not in str(err.value)
    (tmp_path / "small.pem").write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    (tmp_path / "k1.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256K1())))
    enc = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    (tmp_path / "enc.pem").write_bytes(enc)
    (tmp_path / "big.pem").write_bytes(b"x" * (dsse.MAX_KEY_FILE_BYTES + 10))
    for ref in ("small.pem", "k1.pem", "enc.pem", "big.pem", "missing.pem", "", "file:///etc/passwd",
                "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "hashivault://k", "awskms:///"):
        with pytest.raises(ConfigError):
            dsse.signer_from(ref, tmp_path)


def test_a_public_key_is_not_a_signing_key(tmp_path: Path) -> None:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pub)
    with pytest.raises(ConfigError):
        dsse.signer_from("pub.pem", tmp_path)


def test_a_bad_verification_key_is_an_evidence_error(signer: dsse.Signer) -> None:
    env = dsse.sign_envelope("t", b"x", signer)
    for pem in (b"", b"not a key", _pem(ec.generate_private_key(ec.SECP256R1()))):
        with pytest.raises(EvidenceError):
            dsse.verify_envelope(env, pem)


def test_the_signer_repr_never_shows_the_key(signer: dsse.Signer) -> None:
    assert "PRIVATE" not in repr(signer) and "_key" not in repr(signer)


def test_a_fifo_or_a_device_named_as_the_key_is_refused_without_hanging(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo")
    for ref in (str(tmp_path / "fifo"), "/dev/null", str(tmp_path)):
        with pytest.raises(ConfigError):
            dsse.signer_from(ref)


def test_an_envelope_with_a_duplicate_key_is_refused(signer: dsse.Signer) -> None:
    """Parsers differ on which duplicate counts: the envelope must mean one thing to every reader."""
    good = dsse.sign_envelope("t", b"good", signer)
    other = base64.b64encode(b"evil").decode()
    raw = json.dumps(good)[:-1] + f', "payload": "{other}"}}'
    swapped = '{"payload": "' + other + '", ' + json.dumps(good)[1:]
    for text in (raw, swapped):
        with pytest.raises(EvidenceError, match="duplicate"):
            dsse.verify_envelope(text.encode(), signer.public_key_pem())
