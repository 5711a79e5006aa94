"""Secrets never leave the process, and hostile strings from the cluster stay data.

One full ``sigaudit scan`` (the real CLI, ``-vv``) against registries that need credentials — a
Basic-auth registry (password in the docker config) and a token-auth registry (password exchanged
for bearer tokens, which the proxy in front of it records) — with its public key fetched from an
HTTPS URL that carries a user and password (``https://user:password@host/k.pub``, the server demands
them), writes every output it has: stdout JSON, stderr debug logs, ``--json-out``, the HTML report,
the metrics file, the SQLite database, and ``sigaudit report`` in CSV/JSON/HTML. ``sigaudit -vv serve``
then runs the same scan through ``POST /api/scans`` and answers every endpoint. None of them may
contain a password, a bearer token, or their base64 forms. The pods carry hostile names (``<script>``,
quotes, newlines, CSV formula prefixes); JSON round-trips them as data, the HTML report escapes them,
the CSV quotes them.
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
from pathlib import Path

import pytest

from tests.harness import oci
from tests.harness.cloud_creds import STATIC_AWS, irsa_env, moto_server, write_answering_helper
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import HostileRegistry
from tests.harness.static_https import StaticHTTPS

pytestmark = pytest.mark.integration

BASIC_USER, BASIC_PASSWORD = "basic-user", "Basic-Pa55word-7f3a9c"
TOKEN_USER, TOKEN_PASSWORD = "token-user", "Token-Pa55word-c41e2b"
HOSTILE_NS = "ns-<script>alert('ns')</script>"
HOSTILE_POD = 'pod"><img src=x onerror=alert(1)>\n=HYPERLINK("http://evil")'
HOSTILE_CONTAINER = "c'; DROP TABLE scans; --\u202e"
HOSTILE_OWNER = "=cmd|' /C calc'!A0"
KEY_USER, KEY_PASSWORD = "key-user", "Key-Pa55word-0b8e21"
# The account moto's STS maps the IRSA role to, and the ECR password it then issues (see tests.harness.cloud_creds).
ECR_ACCOUNT = "123456789012"
ECR_USER, ECR_PASSWORD = "AWS", f"{ECR_ACCOUNT}-auth-token"


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
    with moto_server(tmp) as moto:
        yield from _outputs(registry, registry_factory_module, tmp, moto)


def _outputs(registry, registry_factory_module, tmp: Path, moto: str) -> Iterator[Outputs]:
    """Three credential sources (#21): the Basic registry's password in the docker config's ``auths``,
    the token registry's from a docker credential helper (``credHelpers``), and a third registry's from
    Amazon ECR (IRSA through moto, ``--registry-auth ecr=HOST``)."""
    key = KeyPair.ecdsa()
    token_reg = registry_factory_module(auth="token", users={TOKEN_USER: TOKEN_PASSWORD})
    ecr_reg = registry_factory_module(auth="htpasswd", users={ECR_USER: ECR_PASSWORD})
    basic = HostileRegistry(upstream=registry.url, basic_auth=(BASIC_USER, BASIC_PASSWORD))
    tokened = HostileRegistry(upstream=token_reg.url, forward_auth=True)
    keys = StaticHTTPS({"/k.pub": key.public_pem.encode()}, tmp / "keys", basic_auth=(KEY_USER, KEY_PASSWORD))
    try:
        d1 = oci.make_image(registry.url, "sec/basic", "1")
        sign_image(registry.url, basic.host, "sec/basic", d1, key)
        auth = oci.RegistryAuth(TOKEN_USER, TOKEN_PASSWORD)
        d2 = oci.make_image(token_reg.url, "sec/token", "1", auth=auth)
        sign_image(token_reg.url, tokened.host, "sec/token", d2, key, auth=auth)
        d3 = oci.make_image(ecr_reg.url, "sec/ecr", "1", auth=(ECR_USER, ECR_PASSWORD))
        sign_image(ecr_reg.url, ecr_reg.host, "sec/ecr", d3, key, auth=(ECR_USER, ECR_PASSWORD))
        key_url = f"https://{KEY_USER}:{KEY_PASSWORD}@{keys.host}/k.pub"
        policy = tmp / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{basic.host}', '{tokened.host}', '{ecr_reg.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{basic.host}/*', '{tokened.host}/*', '{ecr_reg.host}/*'], "
            f"verifiers: [{{cosign: {{key: '{key_url}', ignoreTlog: true}}}}]}}\n"
        )
        docker = tmp / "docker"
        docker.mkdir()
        (docker / "config.json").write_text(json.dumps({"auths": {
            basic.host: {"auth": base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()},
        }, "credHelpers": {tokened.host: "sectest"}}))
        write_answering_helper(tmp / "bin", "sectest", {tokened.host: (TOKEN_USER, TOKEN_PASSWORD)})
        pods = [
            _pod("plain", "p1", [("c", f"{basic.host}/sec/basic:1", f"{basic.host}/sec/basic@{d1}")],
                 pull_secrets=["regcred"]),
            _pod(HOSTILE_NS, HOSTILE_POD, [(HOSTILE_CONTAINER, f"{tokened.host}/sec/token:1",
                                            f"{tokened.host}/sec/token@{d2}")], owner=("StatefulSet", HOSTILE_OWNER)),
            _pod("plain", "p3", [("c", f"{ecr_reg.host}/sec/ecr:1", f"{ecr_reg.host}/sec/ecr@{d3}")]),
        ]
        pods[1]["metadata"]["annotations"] = {"note": "</script><script>alert('annotation')</script>"}
        pods_file = tmp / "pods.json"
        pods_file.write_text(json.dumps({"kind": "List", "items": pods}))
        db = tmp / "sigaudit.db"
        env = {**{k: v for k, v in os.environ.items() if k not in STATIC_AWS},
               "DOCKER_CONFIG": str(docker), "SIGAUDIT_DATA_DIR": str(tmp / "data"),
               "SSL_CERT_FILE": str(keys.ca_path), "PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}",
               "SIGAUDIT_REGISTRY_AUTH": f"helpers,ecr={ecr_reg.host}",
               **irsa_env(moto, ECR_ACCOUNT, tmp / "web-identity-token")}
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
        files.update(_serve_outputs(cli, pods_file, policy, tmp, env))
        assert any(auth for path, auth in keys.requests if path == "/k.pub"), "the key URL was never fetched"
        tokens = sorted({h.headers["authorization"].split(" ", 1)[1] for h in tokened.requests
                         if h.headers.get("authorization", "").startswith("Bearer ")})
        assert tokens, "the token registry never received a bearer token"
        secrets = [*_forms(BASIC_PASSWORD), *_forms(TOKEN_PASSWORD), *_forms(f"{BASIC_USER}:{BASIC_PASSWORD}"),
                   *_forms(f"{TOKEN_USER}:{TOKEN_PASSWORD}"), *_forms(KEY_PASSWORD),
                   *_forms(f"{KEY_USER}:{KEY_PASSWORD}"), *tokens, *_forms(ECR_PASSWORD),
                   *_forms(f"{ECR_USER}:{ECR_PASSWORD}"), (tmp / "web-identity-token").read_text()]
        yield Outputs(files, secrets, json.loads(r.stdout))
    finally:
        basic.close()
        tokened.close()
        keys.close()


def _serve_outputs(cli: list[str], pods_file: Path, policy: Path, tmp: Path, env: dict[str, str]) -> dict[str, bytes]:
    """``sigaudit -vv serve`` over the same estate: one scan through ``POST /api/scans``, then every
    endpoint's answer (and the server's log) as outputs."""
    import time

    import httpx

    from tests.harness.tools import free_port, stop_process, wait_for_http

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*cli, "-vv", "serve", "--pods-file", str(pods_file), "--policy", str(policy),
             "--db", f"sqlite:///{tmp / 'serve.db'}", "--cluster", "sec", "--listen", f"127.0.0.1:{port}",
             "--no-run-at-start", "--schedule", "@yearly", "--per-image-metrics"],
            stdout=log, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"})
    out: dict[str, bytes] = {}
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        started = httpx.post(f"{base}/api/scans", json={}, timeout=30)
        assert started.status_code == 202, started.text
        out["serve-post"] = started.content
        scan_id = started.json()["scan_id"]
        deadline = time.monotonic() + 120
        while True:
            listing = httpx.get(f"{base}/api/scans", timeout=30)
            if any(s["id"] == scan_id and s["status"] == "complete" for s in listing.json()["scans"]):
                break
            assert time.monotonic() < deadline, listing.text
            time.sleep(0.5)
        out["serve-list"] = listing.content
        for path in (f"/api/scans/{scan_id}", "/reports/latest.json", "/reports/latest.csv",
                     f"/reports/{scan_id}.html", "/metrics", "/readyz"):
            answer = httpx.get(base + path, timeout=30)
            assert answer.status_code == 200, (path, answer.text[:500])
            out[f"serve{path}"] = answer.content
        assert b'"status":"verified"' in out[f"serve/api/scans/{scan_id}"].replace(b" ", b"")
    finally:
        stop_process(proc)
    # Read after the server closed the database (SQLite checkpoints its WAL into the file then).
    out["serve-db"] = b"".join(p.read_bytes() for p in sorted(tmp.glob("serve.db*")))
    out["serve.log"] = log_path.read_bytes()
    return out


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


def test_scan_verified_through_every_credential_source(outputs: Outputs) -> None:
    assert sorted(i["status"] for i in outputs.json_doc["images"]) == ["verified"] * 3
    sources = sorted(r for i in outputs.json_doc["images"] for r in i["reasons"] if r.startswith("registry cred"))
    assert sources == ["registry credentials: Amazon ECR (AWS default credential chain)",
                       "registry credentials: credential helper docker-credential-sectest",
                       "registry credentials: the scanner's docker config"]


def test_no_output_contains_a_secret(outputs: Outputs) -> None:
    assert len(outputs.files) == 22
    assert b"DEBUG" in outputs.files["stderr"]  # -vv really logged at debug level
    assert b"DEBUG" in outputs.files["serve.log"]
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


# -- Credentials stay with their owner -----------------------------------------------------------------
# A pod's images are read with its own imagePullSecrets and the scanner's own credentials only, each
# tried in turn on 401/403 as the kubelet does; the same digest under two credential sets is judged
# once per set. The registry is the real docker-registry (htpasswd, or token auth with the hand-made
# issuer); the pull secrets go into the same CredentialStore the CLI's --pull-secrets fills (the CLI
# path through a real kube-apiserver is test_kube_pull_secrets_stay_in_their_namespace below).

TENANTS = {"alice": "alice-Pa55-4d1e", "bob": "bob-Pa55-77a0"}


def _dockerconfigjson(host: str, user: str, password: str) -> bytes:
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}).encode()


@dataclass
class Tenancy:
    reg: object
    host: str
    policy: object
    signed: str
    unsigned: list[str]


@pytest.fixture(params=["htpasswd", "token"])
def tenancy(request, registry_factory, tmp_path) -> Tenancy:
    from scanner.policy.loader import load_policy

    reg = registry_factory(auth=request.param, users=TENANTS)
    auth = oci.RegistryAuth(*next(iter(TENANTS.items())))
    key = KeyPair.ecdsa()
    signed = oci.make_image(reg.url, "team/app", "1", auth=auth)
    sign_image(reg.url, reg.host, "team/app", signed, key, auth=auth)
    unsigned = [oci.make_image(reg.url, "team/plain", str(i), auth=auth) for i in range(3)]
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
        f"  insecureRegistries: ['{reg.host}']\n"
        f"  rules:\n    - {{name: r, images: ['{reg.host}/*'], "
        "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
    )
    return Tenancy(reg, reg.host, load_policy(policy), signed, unsigned)


def _tenant_scan(t: Tenancy, pods: list[dict], secrets: dict[tuple[str, str], tuple[str, str]],
                 own: tuple[str, str] | None = None, cache: object = None,
                 workers: int = 4) -> dict[tuple[str, str], tuple[str, str]]:
    """One scan; returns {(namespace, digest): (status, reasons)}."""
    from scanner.pipeline import run_scan
    from scanner.registry.auth import CredentialStore, parse_docker_config
    from scanner.registry.client import RegistryClient

    store = CredentialStore(parse_docker_config(_dockerconfigjson(t.host, *own), "own") if own else None)
    for (ns, name), (user, password) in secrets.items():
        store.add_pull_secret(ns, name, _dockerconfigjson(t.host, user, password))
    with RegistryClient(credentials=store, insecure_registries=t.policy.insecure_registries) as client:
        result = run_scan(t.policy, pods, client=client, cluster="tenants", cache=cache,  # type: ignore[arg-type]
                          workers=workers)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for v in result.verdicts:
        for c in v.image.containers:
            assert (c.namespace, v.digest) not in out, "one namespace's containers split across verdicts"
            out[(c.namespace, v.digest)] = (v.status.value, " | ".join(v.reasons))
    return out


def _tenant_pod(t: Tenancy, ns: str, digest: str, secrets: list[str], repo: str = "team/app") -> dict:
    return _pod(ns, f"p-{digest[7:15]}", [("c", f"{t.host}/{repo}:1", f"{t.host}/{repo}@{digest}")],
                pull_secrets=secrets)


def test_another_namespaces_pull_secret_never_verifies_a_pod(tenancy: Tenancy) -> None:
    t = tenancy
    got = _tenant_scan(t, [_tenant_pod(t, "team-a", t.signed, ["regcred"]), _tenant_pod(t, "team-b", t.signed, [])],
                       {("team-a", "regcred"): ("alice", TENANTS["alice"])})
    assert got[("team-a", t.signed)][0] == "verified", got
    status, reasons = got[("team-b", t.signed)]
    assert status == "error", got  # team-b has no credentials: undecided, never verified through team-a's
    assert "judged separately" in reasons


def test_a_tenants_wrong_secret_never_spoils_another_tenants_verdict(tenancy: Tenancy) -> None:
    t = tenancy
    pods = [_tenant_pod(t, "team-a", t.signed, ["regcred"]), _tenant_pod(t, "team-b", t.signed, ["regcred"]),
            _tenant_pod(t, "team-c", t.signed, ["stale", "regcred"])]
    got = _tenant_scan(t, pods, {("team-a", "regcred"): ("alice", "not-the-password"),
                                 ("team-b", "regcred"): ("bob", TENANTS["bob"]),
                                 ("team-c", "stale"): ("alice", "expired-password"),
                                 ("team-c", "regcred"): ("alice", TENANTS["alice"])})
    assert got[("team-a", t.signed)][0] == "error", got
    assert got[("team-b", t.signed)][0] == "verified", got
    assert got[("team-c", t.signed)][0] == "verified", got  # its second secret is tried after the first's 401


def test_the_scanners_own_credentials_are_tried_after_a_refused_pull_secret(tenancy: Tenancy) -> None:
    t = tenancy
    got = _tenant_scan(t, [_tenant_pod(t, "team-a", t.signed, ["regcred"]), _tenant_pod(t, "team-b", t.signed, [])],
                       {("team-a", "regcred"): ("alice", "not-the-password")}, own=("bob", TENANTS["bob"]))
    assert got[("team-a", t.signed)][0] == "verified", got
    assert got[("team-b", t.signed)][0] == "verified", got


def test_cached_verdicts_are_never_served_to_another_credential_set(tenancy: Tenancy, tmp_path: Path) -> None:
    """Scan 1: team-a alone fills the verification cache (a signed image, three unsigned ones, so the
    warm scan lists the repository's tags once instead of asking per digest). Scan 2: team-b, without
    credentials, runs the same digests: every one is an error, whether the cache or the scan's own tag
    listing (read with team-a's secret) could have answered for it."""
    from scanner.store import open_store, upgrade

    t = tenancy
    upgrade(f"sqlite:///{tmp_path / 'cache.db'}")
    store = open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    secret = {("team-a", "regcred"): ("alice", TENANTS["alice"])}
    team_a = [_tenant_pod(t, "team-a", t.signed, ["regcred"])]
    team_a += [_tenant_pod(t, "team-a", d, ["regcred"], "team/plain") for d in t.unsigned]
    try:
        first = _tenant_scan(t, team_a, secret, cache=store)
        assert first[("team-a", t.signed)][0] == "verified"
        assert {first[("team-a", d)][0] for d in t.unsigned} == {"unsigned"}
        team_b = [_tenant_pod(t, "team-b", t.signed, []), _tenant_pod(t, "team-b", t.unsigned[0], [], "team/plain")]
        # One worker: team-a's images go first, so its tag listing exists before team-b asks.
        second = _tenant_scan(t, [*team_a, *team_b], secret, cache=store, workers=1)
        assert second[("team-a", t.signed)][0] == "verified", second
        assert second[("team-b", t.signed)][0] == "error", second
        assert second[("team-b", t.unsigned[0])][0] == "error", second
    finally:
        store.close()


def test_kube_pull_secrets_stay_in_their_namespace(kube_apiserver, registry_factory, tmp_path: Path) -> None:
    """The CLI path: pods and their imagePullSecrets in a real kube-apiserver, ``sigaudit scan
    --pull-secrets`` against the real htpasswd docker-registry. creds-0 names a wrong secret, creds-a a
    right one, creds-b none; the scanner itself has no credentials. Scanned alone, creds-a and creds-b
    show that creds-b is never verified through creds-a's secret; scanned together, that creds-0's wrong
    secret does not turn creds-a's verdict into an error."""
    from tests.harness.fixtures_kube import (
        container,
        create,
        ensure_namespace,
        make_bare_pod,
        pod_template,
        report_status,
    )

    reg = registry_factory(auth="htpasswd", users=TENANTS)
    key = KeyPair.ecdsa()
    digest = oci.make_image(reg.url, "team/app", "1", auth=reg.auth)
    sign_image(reg.url, reg.host, "team/app", digest, key, auth=reg.auth)
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
        f"  insecureRegistries: ['{reg.host}']\n"
        f"  rules:\n    - {{name: r, images: ['{reg.host}/*'], "
        "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
    )
    s = kube_apiserver
    secrets = {"creds-0": ("alice", "not-the-password"), "creds-a": ("alice", TENANTS["alice"]), "creds-b": None}
    for ns, cred in secrets.items():
        ensure_namespace(s, ns)
        if cred is not None:
            create(s, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                       "metadata": {"name": "regcred", "namespace": ns},
                       "stringData": {".dockerconfigjson": _dockerconfigjson(reg.host, *cred).decode()}})
        tpl = pod_template({}, [container("app", f"{reg.host}/team/app:1")],
                           pull_secrets=["regcred"] if cred is not None else [])
        report_status(s, make_bare_pod(s, ns, "web", tpl), {"app": f"{reg.host}/team/app@{digest}"})
    (tmp_path / "docker").mkdir()

    def scan(*namespaces: str, extra: tuple[str, ...] = (), path: str | None = None) -> dict[str, tuple[str, str]]:
        args = [a for ns in namespaces for a in ("-n", ns)]
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--kubeconfig", str(s.kubeconfig),
                            "--policy", str(policy), "--no-store", "-o", "json", "--no-progress", "--pull-secrets",
                            *args, *extra], capture_output=True, text=True, timeout=180,
                           env={**os.environ, "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker"),
                                **({"PATH": path} if path else {})})
        assert r.returncode in (0, 1), r.stderr[-3000:]
        assert TENANTS["alice"] not in r.stdout + r.stderr
        return {c["namespace"]: (i["status"], " | ".join(i["reasons"]))
                for i in json.loads(r.stdout)["images"] for c in i["containers"]}

    alone = scan("creds-a", "creds-b")
    assert alone["creds-a"][0] == "verified", alone
    assert alone["creds-b"][0] == "error", alone
    together = scan("creds-0", "creds-a", "creds-b")
    assert together["creds-a"][0] == "verified", together
    assert together["creds-0"][0] == "error" and together["creds-b"][0] == "error", together
    assert "pull secret creds-a/regcred" in together["creds-a"][1]

    # #21: a tenant's secret naming a credential helper (credsStore/credHelpers) never makes the scanner
    # run it — the kubelet reads only `auths` — even with --registry-auth helpers and the helper on PATH.
    from tests.harness.cloud_creds import write_helper

    marker = tmp_path / "tenant-helper-ran"
    write_helper(tmp_path / "bin", "tenant", f"open({str(marker)!r}, 'w').write('ran')\n"
                 f"print(json.dumps({{'Username': 'alice', 'Secret': {TENANTS['alice']!r}}}))\n")
    ensure_namespace(s, "creds-h")
    create(s, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
               "metadata": {"name": "regcred", "namespace": "creds-h"},
               "stringData": {".dockerconfigjson": json.dumps({"credsStore": "tenant",
                                                               "credHelpers": {reg.host: "tenant"}})}})
    tpl = pod_template({}, [container("app", f"{reg.host}/team/app:1")], pull_secrets=["regcred"])
    report_status(s, make_bare_pod(s, "creds-h", "web", tpl), {"app": f"{reg.host}/team/app@{digest}"})
    helpers = scan("creds-h", "creds-a", extra=("--registry-auth", "helpers"),
                   path=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert helpers["creds-h"][0] == "error" and helpers["creds-a"][0] == "verified", helpers
    assert not marker.exists(), "a tenant's pull secret made the scanner run a program"
