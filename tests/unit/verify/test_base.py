"""Optional verifier capabilities are declared on the ``Verifier`` protocol with a default, never
discovered with ``getattr``/``hasattr`` (ARCHITECTURE.md): a probe silently does nothing when a verifier
spells the capability differently, and mypy cannot see it."""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import rfc8785

import scanner
import scanner.verify
from scanner.policy import schema
from scanner.verify import base
from scanner.verify.base import Verifier, identity_of

ROOT = Path(scanner.__file__).resolve().parent


def _verifier_classes() -> list[type]:
    for mod in pkgutil.iter_modules(scanner.verify.__path__):
        importlib.import_module(f"scanner.verify.{mod.name}")
    out, todo = [], list(Verifier.__subclasses__())
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return out


def _capabilities() -> set[str]:
    """Every attribute a verifier or a verifier spec may have: the protocol's, each verifier class's,
    each ``…VerifierSpec`` field."""
    names = {n for cls in (Verifier, *_verifier_classes()) for n in vars(cls) if not n.startswith("__")}
    for _, spec in inspect.getmembers(schema, inspect.isclass):
        if spec.__name__.endswith("VerifierSpec") and hasattr(spec, "model_fields"):
            names |= set(spec.model_fields)
    return names - {"name"}


def test_optional_capabilities_have_their_defaults() -> None:
    # The protocol's own defaults, which every verifier inherits (they subclass it explicitly).
    assert Verifier.not_found_reason.fget(object()) is None  # type: ignore[attr-defined]
    assert Verifier.results_cacheable(object(), ()) is True  # type: ignore[arg-type]
    classes = _verifier_classes()
    assert len(classes) >= 6  # cosign key/keyless, notation, attestation, static, KMS unavailable
    assert all(isinstance(inspect.getattr_static(c, "not_found_reason"), property) for c in classes)


def test_no_capability_of_a_verifier_or_spec_is_probed_with_getattr() -> None:
    capabilities = _capabilities()
    assert {"not_found_reason", "results_cacheable", "note_name", "public_key_ids"} <= capabilities
    probes = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value in capabilities):
                probes.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.func.id} {node.args[1].value!r}")
    assert probes == [], "declare the capability on the Verifier protocol (or the Spec) instead:\n" + "\n".join(probes)


# -- identity_of: canonical JSON once per distinct identity (issue 19, the warm path) --

def _uncached_identity(kind: str, parts: Mapping[str, Any]) -> str:
    doc: dict[str, Any] = {"identity_version": base.IDENTITY_VERSION, "sigaudit": scanner.__version__, "kind": kind,
           "parts": dict(parts)}
    return base.IDENTITY_PREFIX + hashlib.sha256(rfc8785.dumps(doc)).hexdigest()


def test_identity_of_canonicalizes_each_distinct_identity_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every image of a scan asks its verifiers for their identity, mostly with the same parts (a
    cosign key names no repository): 2,000 RFC 8785 encodings were a tenth of a warm scan's CPU."""
    calls = []
    real = rfc8785.dumps

    def counting(doc: Any) -> bytes:
        calls.append(doc)
        return real(doc)

    monkeypatch.setattr(rfc8785, "dumps", counting)
    parts = {"name": "cosign key k", "annotations": {"team": "a"}, "require": ["x"], "sigstore": None}
    first = base.identity_of("cosign", parts)
    for _ in range(200):
        assert base.identity_of("cosign", dict(parts)) == first
    assert len(calls) == 1
    assert first == _uncached_identity("cosign", parts)


def test_identity_of_memo_never_conflates_different_values() -> None:
    """Values that differ in type or content are distinct identities, whatever was asked before; what
    RFC 8785 refuses is still refused after an equal-looking value was accepted."""
    variants: list[dict[str, Any]] = [
        {"v": [1, 2]}, {"v": (1, 2)}, {"v": 1}, {"v": True}, {"v": "1"}, {"v": None}, {"v": {"a": 1}},
        {"v": {"a": "1"}}, {"v": "é"}, {"v": "e\u0301"}, {"w": 1},
    ]
    for parts in variants * 2:
        assert identity_of("k", parts) == _uncached_identity("k", parts)
    assert identity_of("k", {"v": 1}) != identity_of("k", {"v": "1"}) != identity_of("k", {"v": True})
    assert identity_of("k2", {"v": 1}) != identity_of("k", {"v": 1})
    identity_of("k", {"v": {"1": 2}})
    with pytest.raises(rfc8785.CanonicalizationError):
        identity_of("k", {"v": {1: 2}})
    with pytest.raises(rfc8785.CanonicalizationError):
        identity_of("k", {"v": {1: 2}})


def test_identity_of_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_IDENTITIES_MAX", 8)
    for i in range(100):
        assert base.identity_of("k", {"n": i}) == _uncached_identity("k", {"n": i})
        assert len(base._IDENTITIES) <= 8
