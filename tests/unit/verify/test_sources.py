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
