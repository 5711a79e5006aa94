"""Secrets never leave the process, and hostile strings from the cluster stay data.

One full ``sigaudit scan`` (the real CLI, ``-vv``) against registries that need credentials — a
Basic-auth registry (password in the docker config) and a token-auth registry (password exchanged
for bearer tokens, which the proxy in front of it records) — writes every output it has: stdout
JSON, stderr debug logs, ``--json-out``, the HTML report, the metrics file, the SQLite database,
and ``sigaudit report`` in CSV/JSON/HTML. None of them may contain a password, a bearer token, or
their base64 forms. The pods carry hostile names (``<script>``, quotes, newlines, CSV formula
prefixes); JSON round-trips them as data, the HTML report escapes them, the CSV quotes them.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import HostileRegistry

pytestmark = pytest.mark.integration

BASIC_USER, BASIC_PASSWORD = "basic-user", "Basic-Pa55word-7f3a9c"
TOKEN_USER, TOKEN_PASSWORD = "token-user", "Token-Pa55word-c41e2b"
HOSTILE_NS = "ns-<script>alert('ns')</script>"
HOSTILE_POD = 'pod"><img src=x onerror=alert(1)>\n=HYPERLINK("http://evil")'
HOSTILE_CONTAINER = "c'; DROP TABLE scans; --\u202e"
HOSTILE_OWNER = "=cmd|' /C calc'!A0"


@dataclass
class Outputs:
    files: dict[str, bytes]
    secrets: list[str]
    json_doc: dict


def _forms(secret: str) -> list[str]:
    b = secret.encode()
    return [secret, base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode().rstrip("=")]


@pytest.fixture(scope="module")
def outputs(registry, registry_factory_module, tmp_path_factory) -> Iterator[Outputs]:
    tmp = tmp_path_factory.mktemp("secrets")
    key = KeyPair.ecdsa()
    token_reg = registry_factory_module(auth="token", users={TOKEN_USER: TOKEN_PASSWORD})
    basic = HostileRegistry(upstream=registry.url, basic_auth=(BASIC_USER, BASIC_PASSWORD))
    tokened = HostileRegistry(upstream=token_reg.url, forward_auth=True)
    try:
        d1 = oci.make_image(registry.url, "sec/basic", "1")
        sign_image(registry.url, basic.host, "sec/basic", d1, key)
        auth = oci.RegistryAuth(TOKEN_USER, TOKEN_PASSWORD)
        d2 = oci.make_image(token_reg.url, "sec/token", "1", auth=auth)
        sign_image(token_reg.url, tokened.host, "sec/token", d2, key, auth=auth)
        (tmp / "k.pub").write_text(key.public_pem)
        policy = tmp / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{basic.host}', '{tokened.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{basic.host}/*', '{tokened.host}/*'], "
            "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
        )
        docker = tmp / "docker"
        docker.mkdir()
        (docker / "config.json").write_text(json.dumps({"auths": {
            basic.host: {"auth": base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()},
            tokened.host: {"username": TOKEN_USER, "password": TOKEN_PASSWORD},
        }}))
        pods = [
            _pod("plain", "p1", [("c", f"{basic.host}/sec/basic:1", f"{basic.host}/sec/basic@{d1}")],
                 pull_secrets=["regcred"]),
            _pod(HOSTILE_NS, HOSTILE_POD, [(HOSTILE_CONTAINER, f"{tokened.host}/sec/token:1",
                                            f"{tokened.host}/sec/token@{d2}")], owner=("StatefulSet", HOSTILE_OWNER)),
        ]
        pods[1]["metadata"]["annotations"] = {"note": "</script><script>alert('annotation')</script>"}
        pods_file = tmp / "pods.json"
        pods_file.write_text(json.dumps({"kind": "List", "items": pods}))
        db = tmp / "sigaudit.db"
        env = {**os.environ, "DOCKER_CONFIG": str(docker), "SIGAUDIT_DATA_DIR": str(tmp / "data")}
        cli = [sys.executable, "-m", "scanner.cli"]
        r = subprocess.run([*cli, "-vv", "scan", "--pods-file", str(pods_file), "--policy", str(policy),
                            "--db", f"sqlite:///{db}", "-o", "json", "--json-out", str(tmp / "scan.json"),
                            "--report", str(tmp / "report.html"), "--metrics-file", str(tmp / "metrics.prom"),
                            "--per-image-metrics", "--no-progress", "--cluster", "sec"],
                           capture_output=True, env=env, timeout=180)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        files = {"stdout": r.stdout, "stderr": r.stderr}
        for name in ("scan.json", "report.html", "metrics.prom", "sigaudit.db"):
            files[name] = (tmp / name).read_bytes()
        for fmt in ("csv", "json", "html"):
            rep = subprocess.run([*cli, "-vv", "report", "--db", f"sqlite:///{db}", "--format", fmt, "--out", "-"],
                                 capture_output=True, env=env, timeout=120)
            assert rep.returncode == 0, rep.stderr.decode()[-2000:]
            files[f"cli-report.{fmt}"], files[f"cli-report-{fmt}.stderr"] = rep.stdout, rep.stderr
        tokens = sorted({h.headers["authorization"].split(" ", 1)[1] for h in tokened.requests
                         if h.headers.get("authorization", "").startswith("Bearer ")})
        assert tokens, "the token registry never received a bearer token"
        secrets = [*_forms(BASIC_PASSWORD), *_forms(TOKEN_PASSWORD), *_forms(f"{BASIC_USER}:{BASIC_PASSWORD}"),
                   *_forms(f"{TOKEN_USER}:{TOKEN_PASSWORD}"), *tokens]
        yield Outputs(files, secrets, json.loads(r.stdout))
    finally:
        basic.close()
        tokened.close()


@pytest.fixture(scope="module")
def registry_factory_module(tmp_path_factory) -> Iterator:
    from tests.harness.fixtures_registry import start_distribution

    started = []

    def make(**options):  # type: ignore[no-untyped-def]
        reg = start_distribution(tmp_path_factory.mktemp("reg"), **options)
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


def test_scan_verified_through_both_credentialed_registries(outputs: Outputs) -> None:
    assert sorted(i["status"] for i in outputs.json_doc["images"]) == ["verified", "verified"]


def test_no_output_contains_a_secret(outputs: Outputs) -> None:
    assert len(outputs.files) == 12
    assert b"DEBUG" in outputs.files["stderr"]  # -vv really logged at debug level
    leaks = [(name, s) for name, data in outputs.files.items() for s in outputs.secrets if s.encode() in data]
    assert not leaks, leaks


def test_hostile_strings_round_trip_through_json_as_data(outputs: Outputs) -> None:
    for doc in (outputs.json_doc, json.loads(outputs.files["scan.json"])):
        containers = [c for i in doc["images"] for c in i["containers"]]
        hostile = next(c for c in containers if c["namespace"] == HOSTILE_NS)
        assert hostile["pod"] == HOSTILE_POD and hostile["container"] == HOSTILE_CONTAINER
        assert hostile["workload_name"] == HOSTILE_OWNER
    stored = json.loads(outputs.files["cli-report.json"])  # the same scan, back from the database
    assert {HOSTILE_NS, HOSTILE_POD, HOSTILE_CONTAINER, HOSTILE_OWNER} <= set(_strings(stored))


def _strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_hostile_strings_are_escaped_in_html(outputs: Outputs) -> None:
    for name in ("report.html", "cli-report.html"):
        html = outputs.files[name].decode()
        assert "<script>alert(" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(" in html or "&lt;script&gt;alert(&#39;ns&#39;)" in html


def test_hostile_strings_survive_csv_as_one_cell(outputs: Outputs) -> None:
    rows = list(csv.reader(io.StringIO(outputs.files["cli-report.csv"].decode())))
    cells = [c for row in rows for c in row]
    assert any(HOSTILE_NS in c for c in cells) and any(HOSTILE_OWNER in c for c in cells)
    # A spreadsheet must not evaluate cluster strings as formulas.
    assert not any(c.startswith(("=cmd", '=HYPERLINK')) for c in cells), [
        c for c in cells if c[:1] in "=+@"]
