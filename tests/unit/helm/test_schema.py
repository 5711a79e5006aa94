"""values.schema.json accepts the defaults and every ci scenario, and rejects bad values naming the key.

(Helm applies the same schema on install/template; tests/integration/test_helm_render.py checks that end.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART = Path(__file__).resolve().parents[3] / "helm" / "sigaudit"
SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def merged(overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over the defaults (maps merge, everything else replaces)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for k, v in over.items():
                out[k] = merge(base.get(k), v) if k in base else v
            return out
        return copy.deepcopy(over)

    return merge(copy.deepcopy(DEFAULTS), overrides)


def errors(values: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(values)]


def test_schema_is_valid_draft7() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_defaults_are_valid() -> None:
    assert errors(DEFAULTS) == []


@pytest.mark.parametrize("path", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.name)
def test_ci_scenarios_are_valid(path: Path) -> None:
    assert errors(merged(yaml.safe_load(path.read_text(encoding="utf-8")))) == []


@pytest.mark.parametrize(
    "overrides, where",
    [
        ({"mode": "daemon"}, "mode"),
        ({"clusterName": ""}, "clusterName"),
        ({"clusterName": "has space"}, "clusterName"),
        ({"cronjob": {"concurrencyPolicy": "Allow"}}, "cronjob.concurrencyPolicy"),
        ({"cronjob": {"schedule": "hourly"}}, "cronjob.schedule"),
        ({"cronjob": {"backoffLimit": -1}}, "cronjob.backoffLimit"),
        ({"server": {"port": 80}}, "server.port"),
        ({"server": {"replicas": 2}}, "server"),
        ({"scope": {"namespaces": ["team-*"]}}, "scope.namespaces.0"),
        ({"scope": {"namespaces": ["Team_A"]}}, "scope.namespaces.0"),
        ({"database": {"type": "mysql"}}, "database.type"),
        ({"database": {"url": "not a url"}}, "database.url"),
        ({"pushgateway": {"url": "pushgateway:9091"}}, "pushgateway.url"),
        ({"image": {"digest": "sha256:abc"}}, "image.digest"),
        ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
        ({"trust": {"configMaps": [{"name": "keys"}]}}, "trust.configMaps.0"),
        ({"trust": {"secrets": [{"name": "s", "dir": "../etc"}]}}, "trust.secrets.0.dir"),
        ({"trust": {"secrets": [{"name": "s", "dir": "inline"}]}}, "trust.secrets.0.dir"),
        ({"trust": {"files": {"a/b.pub": "x"}}}, "trust.files"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "securityContext.allowPrivilegeEscalation"),
        ({"securityContext": {"privileged": True}}, "securityContext.privileged"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "securityContext.readOnlyRootFilesystem"),
        ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "securityContext.capabilities.drop"),
        (
            {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}},
            "securityContext.capabilities.add.0",
        ),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext.runAsNonRoot"),
        ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "podSecurityContext.seccompProfile.type"),
        ({"persistence": {"accessModes": ["ReadWriteAlways"]}}, "persistence.accessModes.0"),
        ({"persistence": {"size": "lots"}}, "persistence.size"),
        ({"scan": {"concurrency": 0}}, "scan.concurrency"),
        ({"metrics": {"serviceMonitor": {"interval": "1 minute"}}}, "metrics.serviceMonitor.interval"),
        (
            {"policy": {"content": {"kind": "ClusterPolicy", "apiVersion": "kyverno.io/v1", "spec": {}}}},
            "policy.content",
        ),
        ({"typo": 1}, ""),
    ],
)
def test_bad_values_are_rejected_at_their_key(overrides: dict[str, Any], where: str) -> None:
    found = errors(merged(overrides))
    assert found, f"accepted {overrides}"
    assert any(e.startswith(f"{where}:") for e in found), found
