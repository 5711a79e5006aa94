"""The in-memory overlay of the trust-material edge (issue #18: importers hand trust material to the
verifiers as bytes, no temp files): a ``sigaudit-mem:/`` name is answered from memory in every
``Sources``, never from the disk, and never from a name a user wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.verify import sources


def _all_sources() -> list[sources.Sources]:
    return [sources.FileSystem(), sources.Recording(), sources.Replay([], {})]


@pytest.mark.parametrize("which", ["FileSystem", "Recording", "Replay"])
def test_virtual_files_and_trees_are_answered_from_memory(which: str, tmp_path: Path) -> None:
    src = {s.__class__.__name__: s for s in _all_sources()}[which]
    name = sources.virtual(b"-----BEGIN CERTIFICATE-----\nx\n", ".pem")
    root = sources.virtual_tree({"x509/ca/s/a.pem": "A", "trustpolicy.json": "{}"})
    assert name.startswith(sources.MEM_PREFIX) and root.startswith(sources.MEM_PREFIX)
    with sources.reading_from(src):
        assert sources.read_bytes(Path(name)) == b"-----BEGIN CERTIFICATE-----\nx\n"
        # a policy's base directory joined in front (as the verifiers do) names the same material
        assert sources.under(tmp_path, name) == Path(name)
        assert sources.read_bytes(sources.under(tmp_path, name)) == b"-----BEGIN CERTIFICATE-----\nx\n"
        assert sources.is_file(Path(name)) and not sources.is_dir(Path(name))
        assert sources.size(Path(name)) == len(b"-----BEGIN CERTIFICATE-----\nx\n")
        assert sources.resolve(sources.under(tmp_path, root)) == Path(root)
        assert sources.is_dir(Path(root)) and sources.is_dir(Path(root) / "x509" / "ca")
        assert [p.name for p in sources.iterdir(Path(root))] == ["trustpolicy.json", "x509"]
        assert sources.read_bytes(Path(root) / "x509/ca/s/a.pem") == b"A"
        assert not sources.is_file(Path(root) / "x509/ca/s/missing.pem")
        with pytest.raises(FileNotFoundError):
            sources.read_bytes(Path(root) / "missing")
    if isinstance(src, sources.Recording):  # kept like a file, so a pack shows the material
        assert {"op": "read", "path": name, "sha256": sources._sha(b"-----BEGIN CERTIFICATE-----\nx\n")} in (
            src.snapshot.entries)
        assert all(tmp_path.as_posix() not in json.dumps(e) for e in src.snapshot.entries)


def test_a_virtual_name_never_reaches_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that happens to exist at ``./sigaudit-mem:/<name>`` (the prefix is a valid relative path
    on POSIX) is never what the verifiers read."""
    monkeypatch.chdir(tmp_path)
    planted = tmp_path / "sigaudit-mem:" / "planted.pem"
    planted.parent.mkdir()
    planted.write_text("-----BEGIN CERTIFICATE-----\nattacker\n")
    for src in _all_sources():
        with sources.reading_from(src):
            assert not sources.is_file(Path("sigaudit-mem:/planted.pem"))
            with pytest.raises(FileNotFoundError):
                sources.read_bytes(Path("sigaudit-mem:/planted.pem"))
            with pytest.raises(FileNotFoundError):
                sources.read_bytes(sources.under(tmp_path, "sigaudit-mem:/planted.pem"))


_PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize("field", ["roots", "key", "trustedRoot"])
def test_a_policy_file_cannot_name_another_imports_material(field: str, tmp_path: Path) -> None:
    """A tenant's policy file naming an in-memory name (here one another import registered) is refused at
    load, whatever field carries it."""
    from scanner.policy.loader import load_policy

    taken = sources.virtual(_PEM, ".pem")
    verifier = {
        "roots": f"{{keyless: {{roots: '{taken}', identities: [{{issuer: i, subject: s}}]}}, ignoreTlog: true}}",
        "key": f"{{key: '{taken}', ignoreTlog: true}}",
        "trustedRoot": f"{{trustedRoot: '{taken}', keyless: {{identities: [{{issuer: i, subject: s}}]}}}}",
    }[field]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
        f"    - name: r\n      images: ['registry.example/*']\n      verifiers:\n        - cosign: {verifier}\n"
    )
    with pytest.raises(ConfigError, match="in-memory trust material"):
        load_policy(str(policy))


def test_an_imported_document_cannot_name_in_memory_material(tmp_path: Path) -> None:
    from scanner.policy.sources import load_policies

    taken = sources.virtual(_PEM, ".pem")
    doc = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"},
           "spec": {"rules": [{"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                               "verifyImages": [{"imageReferences": ["registry.example/*"],
                                                 "attestors": [{"entries": [{"keys": {"publicKeys": taken}}]}]}]}]}}
    f = tmp_path / "kyverno.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="in-memory trust material"):
        load_policies(None, (f"kyverno:{f}",))
    with pytest.raises(ConfigError, match="in-memory trust material"):
        load_policies(None, (f"notation:{sources.virtual_tree({'trustpolicy.json': '{}'})}",))


def test_a_key_text_naming_in_memory_material_is_refused(tmp_path: Path) -> None:
    """However a key text reached the loader (a Kubernetes Secret's value, say)."""
    from scanner.policy.loader import PolicyLoader

    with pytest.raises(ConfigError, match="cannot be read from"):
        PolicyLoader().load_key(sources.virtual(_PEM, ".pem"), tmp_path, "k")


# -- Trust material read during one image's verification (issue #23: it follows the image's verdict) --


class _Net:
    """A fetcher standing in for the network: ``answers[url]`` bytes, ``asked`` every URL fetched."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers, self.asked = answers, []

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        self.asked.append(url)
        return self.answers[url]

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        raise AssertionError("no POST here")


def test_each_images_fetches_and_cache_reuses_are_noted_to_that_images_tap() -> None:
    net = _Net({"http://ca/a.crl": b"CRL-A"})
    rec = sources.Recording()
    with sources.reading_from(rec):
        fetcher = sources.wrap_fetcher(net)
        reusable = sources.reuse_check()
    first: list[sources.Use] = []
    second: list[sources.Use] = []
    with sources.noting(first.append):
        assert fetcher.get("http://ca/a.crl", max_bytes=100, timeout=1) == b"CRL-A"
    with sources.noting(second.append):  # the next image: served by a cache, without a fetch
        assert reusable("http://ca/a.crl", b"CRL-A")
    assert net.asked == ["http://ca/a.crl"]
    for uses in (first, second):
        (u,) = uses
        assert (u.kind, u.ref, u.data, u.fetched) == ("get", "http://ca/a.crl", b"CRL-A", True)
        assert u.entry == {"op": "get", "path": "http://ca/a.crl", "sha256": sources._sha(b"CRL-A")}
    # outside any image: kept in the scan's snapshot, noted to nobody
    assert [e["path"] for e in rec.snapshot.entries] == ["http://ca/a.crl"]


def test_a_replayed_image_is_answered_from_its_own_record_only() -> None:
    a, b = {"op": "get", "path": "http://ca/x.crl", "sha256": sources._sha(b"A")}, \
        {"op": "get", "path": "http://ca/x.crl", "sha256": sources._sha(b"B")}
    replay = sources.Replay([a], {a["sha256"]: b"A"})  # the scan's snapshot holds image A's CRL
    with sources.reading_from(replay):
        fetcher = sources.wrap_fetcher(_Net({}))
        reusable = sources.reuse_check()
    assert fetcher.get("http://ca/x.crl", max_bytes=9, timeout=1) == b"A"  # no image: the snapshot
    with sources.answering_first([b], {b["sha256"]: b"B"}):  # image B recorded another CRL at that URL
        assert fetcher.get("http://ca/x.crl", max_bytes=9, timeout=1) == b"B"
        assert not reusable("http://ca/x.crl", b"A")  # a cache filled by A's replay never answers for B
        assert reusable("http://ca/x.crl", b"B")
    with sources.answering_first([], {}):  # an image that recorded none: never the snapshot's (A's)
        with pytest.raises(ConfigError, match="not in the evidence pack"):
            fetcher.get("http://ca/x.crl", max_bytes=9, timeout=1)
        assert not reusable("http://ca/x.crl", b"A")
    with sources.answering_first([b], {}):  # named but its bytes absent: absent
        with pytest.raises(ConfigError):
            fetcher.get("http://ca/x.crl", max_bytes=9, timeout=1)


def test_a_lazily_loaded_root_is_noted_for_every_image_and_reloaded_for_one_that_recorded_another() -> None:
    from scanner.verify.trustroot import LazyTrust

    loads: list[bytes] = []

    def loader() -> object:
        raw = sources.fetched("sigstore", "public-good trusted_root.json", lambda: b"ROOT-1")
        loads.append(raw)
        return raw

    rec = sources.Recording()
    with sources.reading_from(rec):
        lazy = LazyTrust(loader, name="root")  # type: ignore[arg-type]
    seen: dict[str, list[sources.Use]] = {"a": [], "b": []}
    for image, uses in seen.items():
        with sources.noting(uses.append):
            assert lazy.get() == b"ROOT-1"
    assert loads == [b"ROOT-1"]  # loaded once, used by both images: both records hold it
    assert [u.data for u in seen["a"]] == [b"ROOT-1"] and [u.data for u in seen["b"]] == [b"ROOT-1"]
    entry = seen["a"][0].entry
    replay = sources.Replay([dict(entry)], {entry["sha256"]: b"ROOT-1"})
    with sources.reading_from(replay):
        lazy = LazyTrust(loader, name="root")  # type: ignore[arg-type]
    other = {"op": "sigstore", "path": "public-good trusted_root.json", "sha256": sources._sha(b"ROOT-2")}
    with sources.answering_first([entry], {entry["sha256"]: b"ROOT-1"}):
        assert lazy.get() == b"ROOT-1"
    with sources.answering_first([other], {other["sha256"]: b"ROOT-2"}):
        assert lazy.get() == b"ROOT-2"  # not the root another image's replay loaded
