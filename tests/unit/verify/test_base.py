"""Optional verifier capabilities are declared on the ``Verifier`` protocol with a default, never
discovered with ``getattr``/``hasattr`` (ARCHITECTURE.md): a probe silently does nothing when a verifier
spells the capability differently, and mypy cannot see it."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import scanner
import scanner.verify
from scanner.policy import schema
from scanner.verify.base import Verifier

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
