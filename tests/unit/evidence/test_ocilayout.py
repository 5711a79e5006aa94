"""scanner.evidence.ocilayout: recorded answers -> an OCI image layout, and its check."""

from __future__ import annotations

import json

from scanner.evidence.capture import sha256_hex
from scanner.evidence.ocilayout import KIND_IMAGE, KIND_IMAGE_INDEX, KIND_SIGS, check_layout, layout_files

IMG = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
DIGEST = "sha256:" + sha256_hex(IMG)
HEX = DIGEST.removeprefix("sha256:")
OCI_M = "application/vnd.oci.image.manifest.v1+json"


def _doc(**kw: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_M, **kw}).encode()


SIG_LAYER = b'{"critical":{}}'
SIG = _doc(layers=[{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": "sha256:" + sha256_hex(SIG_LAYER), "size": len(SIG_LAYER)}])
REFERRER = _doc(artifactType="application/vnd.cncf.notary.signature",
                subject={"mediaType": OCI_M, "digest": DIGEST, "size": len(IMG)})
STRANGER = _doc(subject={"mediaType": OCI_M, "digest": "sha256:" + "0" * 64, "size": 1})


def _answer(op: str, reference: str, data: bytes, media_type: str = OCI_M, digest: str | None = None) -> dict:
    a = {"key": [op, "r.example", "app", reference, None], "sha256": sha256_hex(data), "mediaType": media_type}
    if op == "get_manifest":
        a["digest"] = digest or "sha256:" + sha256_hex(data)
    return a


def _material(*answers: dict) -> dict:
    return {"schema_version": 1, "answers": list(answers)}


def _blobs(*datas: bytes) -> dict[str, bytes]:
    return {sha256_hex(d): d for d in datas}


def test_lists_the_image_the_sig_tag_and_its_referrers_only() -> None:
    m = _material(_answer("get_manifest", DIGEST, IMG), _answer("get_manifest", f"sha256-{HEX}.sig", SIG),
                  _answer("get_blob", "sha256:" + sha256_hex(SIG_LAYER), SIG_LAYER, "x"),
                  _answer("get_manifest", "sha256:" + sha256_hex(REFERRER), REFERRER),
                  _answer("get_manifest", "sha256:" + sha256_hex(STRANGER), STRANGER))
    files = layout_files(DIGEST, [m], _blobs(IMG, SIG, SIG_LAYER, REFERRER, STRANGER))
    index = json.loads(files["index.json"])
    kinds = [(x["digest"], (x.get("annotations") or {}).get("kind")) for x in index["manifests"]]
    assert kinds[0] == (DIGEST, KIND_IMAGE)
    assert ("sha256:" + sha256_hex(SIG), KIND_SIGS) in kinds
    assert ("sha256:" + sha256_hex(REFERRER), None) in kinds
    assert all(d != "sha256:" + sha256_hex(STRANGER) for d, _ in kinds)  # another image's referrer
    assert files["oci-layout"] and f"blobs/sha256/{sha256_hex(SIG_LAYER)}" in files
    assert check_layout(files, "") == []


def test_an_index_image_is_annotated_as_one() -> None:
    idx = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    d = "sha256:" + sha256_hex(idx)
    files = layout_files(d, [_material(_answer("get_manifest", d, idx, "application/vnd.oci.image.index.v1+json"))],
                         _blobs(idx))
    assert json.loads(files["index.json"])["manifests"][0]["annotations"]["kind"] == KIND_IMAGE_INDEX


def test_no_layout_without_the_image_manifest_and_no_bytes_that_lie() -> None:
    assert layout_files(DIGEST, [_material(_answer("get_manifest", f"sha256-{HEX}.sig", SIG))], _blobs(SIG)) == {}
    # recorded bytes that do not hash to their recorded name are left out, not written under that name
    m = _material(_answer("get_manifest", DIGEST, IMG), _answer("get_manifest", f"sha256-{HEX}.sig", SIG))
    files = layout_files(DIGEST, [m], {sha256_hex(IMG): IMG, sha256_hex(SIG): SIG + b" "})
    assert f"blobs/sha256/{sha256_hex(SIG)}" not in files
    assert len(json.loads(files["index.json"])["manifests"]) == 1
    # a manifest recorded under a digest that is not its bytes' is not listed
    m = _material(_answer("get_manifest", DIGEST, IMG), _answer("get_manifest", "x", SIG, digest="sha256:" + "1" * 64))
    assert len(json.loads(layout_files(DIGEST, [m], _blobs(IMG, SIG))["index.json"])["manifests"]) == 1


def test_check_layout_names_a_swapped_blob_and_a_dangling_entry() -> None:
    files = layout_files(DIGEST, [_material(_answer("get_manifest", DIGEST, IMG))], _blobs(IMG))
    prefixed = {f"p/{k}": v for k, v in files.items()}
    assert check_layout(prefixed, "p/") == []
    swapped = {**prefixed, f"p/blobs/sha256/{HEX}": IMG + b" "}
    problems = check_layout(swapped, "p/")
    assert any("do not hash" in p for p in problems) and any("no blob of its size" in p for p in problems)
    assert check_layout({**prefixed, "p/index.json": b"{"}, "p/") == ["p/index.json: malformed (JSONDecodeError)"]
    assert check_layout({k: v for k, v in prefixed.items() if not k.endswith("index.json")}, "p/") == [
        "p/index.json: missing"]


def test_check_layout_refuses_an_index_that_points_the_tools_at_another_image() -> None:
    other = _doc(layers=[{"mediaType": "x", "digest": "sha256:" + "2" * 64, "size": 1}])
    m = _material(_answer("get_manifest", DIGEST, IMG), _answer("get_manifest", f"sha256-{HEX}.sig", SIG))
    files = layout_files(DIGEST, [m], _blobs(IMG, SIG))
    assert check_layout(files, "", DIGEST) == []
    index = json.loads(files["index.json"])
    # the image entry swapped for another (signed) image's manifest, present in the layout
    forged = json.loads(json.dumps(index))
    forged["manifests"][0].update(digest="sha256:" + sha256_hex(other), size=len(other))
    bad = {**files, "index.json": json.dumps(forged).encode(), f"blobs/sha256/{sha256_hex(other)}": other}
    assert any("image entry" in p for p in check_layout(bad, "", DIGEST))
    # a second image entry, or a .sig entry named for another digest
    twice = json.loads(json.dumps(index))
    twice["manifests"].insert(0, dict(twice["manifests"][0]))
    assert any("image entry" in p
               for p in check_layout({**files, "index.json": json.dumps(twice).encode()}, "", DIGEST))
    renamed = json.loads(json.dumps(index))
    renamed["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"] = "sha256-" + "3" * 64 + ".sig"
    assert any(".sig" in p for p in check_layout({**files, "index.json": json.dumps(renamed).encode()}, "", DIGEST))
    assert check_layout({**files, "index.json": b'{"manifests": ["x"]}'}, "", DIGEST) == [
        "index.json: malformed (TypeError)"]
    assert check_layout({**files, "index.json": b'{"manifests": [{"digest": 1, "size": 0}, 7]}'}, "", DIGEST)


def test_one_digest_from_two_repositories_gets_the_named_repositorys_signatures_only() -> None:
    other_sig = _doc(layers=[])
    a = _material(_answer("get_manifest", DIGEST, IMG), _answer("get_manifest", f"sha256-{HEX}.sig", SIG))
    b = {"schema_version": 1, "answers": [
        {**_answer("get_manifest", DIGEST, IMG), "key": ["get_manifest", "r.example", "mirror", DIGEST, None]},
        {**_answer("get_manifest", f"sha256-{HEX}.sig", other_sig),
         "key": ["get_manifest", "r.example", "mirror", f"sha256-{HEX}.sig", None]}]}
    files = layout_files(DIGEST, [a, b], _blobs(IMG, SIG, other_sig), ("r.example", "app"))
    sigs = [m for m in json.loads(files["index.json"])["manifests"]
            if m.get("annotations", {}).get("kind") == KIND_SIGS]
    assert [m["digest"] for m in sigs] == ["sha256:" + sha256_hex(SIG)]
    assert f"blobs/sha256/{sha256_hex(other_sig)}" not in files
    assert check_layout(files, "", DIGEST) == []
    # unfiltered, the two .sig manifests would be two entries, which the check refuses
    merged = layout_files(DIGEST, [a, b], _blobs(IMG, SIG, other_sig))
    assert any(".sig" in p for p in check_layout(merged, "", DIGEST))
