"""rekor.verify_rekor_bundle_annotation with the public keyless cosign vector's SET."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.errors import ConfigError
from scanner.verify.rekor import (
    RekorBadSET,
    RekorEntryMismatch,
    RekorError,
    RekorKey,
    RekorParseError,
    RekorUnknownLog,
    load_rekor_keys_from_pem,
    load_rekor_keys_from_trusted_root,
    verify_rekor_bundle_annotation,
)
from tests.vectors import VECTORS

LEGACY = VECTORS / "cosign" / "legacy-oci-connaisseur"
SIG_MANIFEST = "sha256-31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee.sig.json"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def layer() -> tuple[dict[str, str], bytes]:
    m = json.loads((LEGACY / "registry" / "manifests" / SIG_MANIFEST).read_text())
    l0 = m["layers"][0]
    return l0["annotations"], (LEGACY / "registry" / "blobs" / f"{l0['digest']}.json").read_bytes()


@pytest.fixture(scope="module")
def keys() -> list[RekorKey]:
    return load_rekor_keys_from_pem((LEGACY / "keyless-trust" / "rekor.pub.pem").read_bytes())


def _verify(ann: dict[str, str], payload: bytes, keys: list[RekorKey], **over: object) -> object:
    kw: dict[str, object] = dict(signature_b64=ann["dev.cosignproject.cosign/signature"], payload=payload,
                                 signer_pem_or_der=ann["dev.sigstore.cosign/certificate"].encode(),
                                 rekor_keys=keys, now=NOW)
    kw.update(over)
    annotation = kw.pop("annotation", ann["dev.sigstore.cosign/bundle"])
    return verify_rekor_bundle_annotation(annotation, **kw)  # type: ignore[arg-type]


def test_keyless_vector_set_verifies(layer: tuple[dict[str, str], bytes], keys: list[RekorKey]) -> None:
    ann, payload = layer
    res = _verify(ann, payload, keys)
    assert res.integrated_time == datetime.fromtimestamp(1717082297, tz=UTC)  # type: ignore[attr-defined]
    assert res.log_index == 98235800  # type: ignore[attr-defined]
    assert res.log_id == "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"  # type: ignore[attr-defined]
    tr_keys = load_rekor_keys_from_trusted_root(LEGACY / "production.trusted_root.json")
    assert _verify(ann, payload, tr_keys).log_index == 98235800  # type: ignore[attr-defined]
    assert keys[0].log_id_hex == res.log_id  # type: ignore[attr-defined]


def test_set_from_untrusted_log(layer: tuple[dict[str, str], bytes]) -> None:
    ann, payload = layer
    other = load_rekor_keys_from_pem((LEGACY / "keyless-trust" / "ctlog.pub.pem").read_bytes())
    with pytest.raises(RekorUnknownLog):
        _verify(ann, payload, other)


def test_set_signed_by_another_key_under_the_same_log_id(layer: tuple[dict[str, str], bytes],
                                                         keys: list[RekorKey]) -> None:
    ann, payload = layer
    impostor = RekorKey(ec.generate_private_key(ec.SECP256R1()).public_key(), keys[0].log_id)
    with pytest.raises(RekorBadSET):
        _verify(ann, payload, [impostor])


def test_key_validity_must_cover_integrated_time(layer: tuple[dict[str, str], bytes],
                                                 keys: list[RekorKey]) -> None:
    ann, payload = layer
    k = keys[0]
    retired = RekorKey(k.key, k.log_id, valid_from=None, valid_until=datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(RekorUnknownLog, match="not valid at integrated time"):
        _verify(ann, payload, [retired])
    exact_end = RekorKey(k.key, k.log_id, valid_until=datetime.fromtimestamp(1717082297, tz=UTC))
    _verify(ann, payload, [exact_end])  # closed interval: the end is inclusive


def test_tampered_payload_and_signature(layer: tuple[dict[str, str], bytes], keys: list[RekorKey]) -> None:
    ann, payload = layer
    with pytest.raises(RekorEntryMismatch, match="another payload"):
        _verify(ann, payload + b" ", keys)
    other_sig = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    with pytest.raises(RekorEntryMismatch, match="another signature"):
        _verify(ann, payload, keys, signature_b64=other_sig)
    chain_first = ann["dev.sigstore.cosign/chain"].split("-----END CERTIFICATE-----")[0] + \
        "-----END CERTIFICATE-----\n"
    with pytest.raises(RekorEntryMismatch, match="another certificate"):
        _verify(ann, payload, keys, signer_pem_or_der=chain_first.encode())


def test_tampered_set_fields(layer: tuple[dict[str, str], bytes], keys: list[RekorKey]) -> None:
    ann, payload = layer
    doc = json.loads(ann["dev.sigstore.cosign/bundle"])
    for field, value in (("integratedTime", 1717082298), ("logIndex", 1)):
        bad = json.loads(json.dumps(doc))
        bad["Payload"][field] = value
        with pytest.raises(RekorBadSET):
            _verify(ann, payload, keys, annotation=json.dumps(bad))


def test_future_integrated_time(layer: tuple[dict[str, str], bytes], keys: list[RekorKey]) -> None:
    ann, payload = layer
    with pytest.raises(RekorBadSET, match="future"):
        _verify(ann, payload, keys, now=datetime(2024, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("annotation", [
    "", "{", "[]", '{"Payload": 1}', '{"SignedEntryTimestamp": "!!", "Payload": {}}',
    json.dumps({"SignedEntryTimestamp": "AA==", "Payload": {"body": "e30=", "integratedTime": -1,
                                                            "logIndex": 1, "logID": "00" * 32}}),
    json.dumps({"SignedEntryTimestamp": "AA==", "Payload": {"body": "e30=", "integratedTime": True,
                                                            "logIndex": 1, "logID": "00" * 32}}),
    json.dumps({"SignedEntryTimestamp": "AA==", "Payload": {"body": "e30=", "integratedTime": 1,
                                                            "logIndex": 1, "logID": "zz" * 32}}),
    "x" * (300 * 1024),
])
def test_malformed_annotations_are_parse_errors(annotation: str, layer: tuple[dict[str, str], bytes],
                                                keys: list[RekorKey]) -> None:
    ann, payload = layer
    with pytest.raises(RekorParseError) as exc:
        _verify(ann, payload, keys, annotation=annotation)
    assert isinstance(exc.value, RekorError) and exc.value.reason


def test_key_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_rekor_keys_from_pem(b"not a key")
    with pytest.raises(ConfigError):
        load_rekor_keys_from_trusted_root(b"{}")
    with pytest.raises(ConfigError):
        load_rekor_keys_from_trusted_root(tmp_path / "missing.json")
