"""What ``make mutation`` mutates, and the unit tests that judge each module's mutants.

The test lists are the unit tests that exercise the module (found with coverage when the mapping was
written); keep them to unit tests so a mutant costs seconds. ``functions`` restricts the mutants to
those functions (qualified names) when only part of a module is trust-critical.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    module: str  # path from the repository root
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()


TARGETS: tuple[Target, ...] = (
    Target(
        "scanner/verify/cosign_rules.py",
        ("tests/unit/verify/test_cosign_rules.py", "tests/unit/verify/test_cosign.py"),
    ),
    Target(
        "scanner/verify/cosign.py",
        (
            "tests/unit/verify/test_cosign.py",
            "tests/unit/verify/test_cosign_key_vectors.py",
            "tests/unit/verify/test_decision_identity.py",
        ),
    ),
    Target(
        "scanner/verify/identity.py",
        ("tests/unit/verify/test_identity.py", "tests/unit/verify/test_identity_matching.py"),
    ),
    Target(
        "scanner/verify/notation.py",
        (
            "tests/unit/verify/test_notation.py",
            "tests/unit/verify/test_notation_checks.py",
            "tests/unit/verify/test_notation_vectors.py",
            "tests/unit/verify/test_notation_signing.py",
            "tests/unit/verify/test_decision_identity.py",
        ),
    ),
    Target(
        "scanner/policy/engine.py",
        ("tests/unit/policy/test_engine.py", "tests/unit/policy/test_engine_decisions.py",
         "tests/unit/policy/test_policy.py", "tests/unit/verify/test_cosign_rules.py"),
    ),
    Target(
        "scanner/pipeline.py",
        ("tests/unit/test_pipeline.py", "tests/unit/test_pipeline_cache.py"),
        functions=("verify_image", "_satisfied", "_from_cache", "_still_valid", "_results_cacheable", "_cache_key"),
    ),
)
