"""Private registries reached the way clusters reach them (issue #21), through the real CLI against a
real docker-registry with htpasswd auth and a cosign-signed image:

- docker credential helpers: small Python scripts on PATH implementing the docker-credential-helpers
  protocol (``docker-credential-<name> get``, the server on stdin, JSON on stdout) — one that answers,
  one that hangs, one that prints garbage, one that is missing;
- Amazon ECR: moto in server mode answers STS ``AssumeRoleWithWebIdentity`` (the IRSA path of boto3's
  default chain: ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``) and ECR ``GetAuthorizationToken``
  (``AWS_ENDPOINT_URL``); the registry's htpasswd accepts the ``AWS:<password>`` moto issues to the
  right account's role, and a role in another account gets an ``error`` verdict.

The host is named for the provider with ``--registry-auth ecr=127.0.0.1:<port>``, as a user would for a
VPC endpoint or pull-through cache. No secret appears in any output (``-vv`` included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.tools import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.integration

HELPER_USER, HELPER_SECRET = "helper-user", "Helper-Pa55word-5e1d90"
ACCOUNT, OTHER_ACCOUNT = "123456789012", "999999999999"
ECR_PASSWORD = f"{ACCOUNT}-auth-token"  # what moto's GetAuthorizationToken issues to the account's principals


@dataclass
class Estate:
    host: str
    digest: str
    policy: Path
    pods: Path
    tmp: Path


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    from tests.harness.fixtures_registry import start_distribution

    tmp = tmp_path_factory.mktemp("credsources")
    reg = start_distribution(tmp / "reg", auth="htpasswd", users={HELPER_USER: HELPER_SECRET, "AWS": ECR_PASSWORD})
    try:
        key = KeyPair.ecdsa()
        auth = (HELPER_USER, HELPER_SECRET)
        digest = oci.make_image(reg.url, "team/app", "1", auth=auth)
        sign_image(reg.url, reg.host, "team/app", digest, key, auth=auth)
        (tmp / "k.pub").write_text(key.public_pem)
        policy = tmp / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{reg.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{reg.host}/*'], "
            f"verifiers: [{{cosign: {{key: '{tmp / 'k.pub'}', ignoreTlog: true}}}}]}}\n"
        )
        pods = tmp / "pods.json"
        pods.write_text(json.dumps({"kind": "List", "items": [
            _pod("team", "p", [("c", f"{reg.host}/team/app:1", f"{reg.host}/team/app@{digest}")])]}))
        yield Estate(reg.host, digest, policy, pods, tmp)
    finally:
        reg.stop()


def _helper(bindir: Path, name: str, body: str) -> None:
    path = bindir / f"docker-credential-{name}"
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture(scope="module")
def helper_bin(estate: Estate) -> Path:
    bindir = estate.tmp / "bin"
    bindir.mkdir(exist_ok=True)
    _helper(bindir, "sigtest", f"""
        server = sys.stdin.read()
        if server != {estate.host!r}:
            print("credentials not found in native keychain"); sys.exit(1)
        print(json.dumps({{"ServerURL": server, "Username": {HELPER_USER!r}, "Secret": {HELPER_SECRET!r}}}))
    """)
    _helper(bindir, "hangs", "time.sleep(300)\n")
    _helper(bindir, "garbage", f"print('{HELPER_SECRET} is not JSON')\n")
    return bindir


def scan(estate: Estate, env: dict[str, str], *flags: str, docker: dict | None = None) -> tuple[dict, str, int]:
    home = estate.tmp / f"docker-{abs(hash((flags, json.dumps(docker))))}"
    home.mkdir(exist_ok=True)
    (home / "config.json").write_text(json.dumps(docker or {}))
    r = subprocess.run(
        [sys.executable, "-m", "scanner.cli", "-vv", "scan", "--pods-file", str(estate.pods), "--policy",
         str(estate.policy), "--db", f"sqlite:///{home / 'scans.db'}", "-o", "json", "--no-progress", *flags],
        capture_output=True, env={**os.environ, **env, "DOCKER_CONFIG": str(home)}, timeout=180,
    )
    assert r.returncode in (0, 1), r.stderr.decode()[-3000:]
    doc = json.loads(r.stdout)
    (image,) = doc["images"]
    out = r.stdout + r.stderr + b"".join(p.read_bytes() for p in home.glob("scans.db*"))
    for secret in (HELPER_SECRET, ECR_PASSWORD):
        assert secret.encode() not in out
    return image, r.stderr.decode(), r.returncode


def helper_env(bindir: Path) -> dict[str, str]:
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def test_a_credential_helper_reads_the_private_registry_and_is_named(estate: Estate, helper_bin: Path) -> None:
    image, log, _ = scan(estate, helper_env(helper_bin), "--registry-auth", "helpers",
                         docker={"credHelpers": {estate.host: "sigtest"}})
    assert image["status"] == "verified", image["reasons"]
    assert "registry credentials: credential helper docker-credential-sigtest" in image["reasons"]
    assert "registry credentials from credential helper docker-credential-sigtest" in log  # -v


def test_creds_store_is_the_helper_for_every_host(estate: Estate, helper_bin: Path) -> None:
    image, _, _ = scan(estate, helper_env(helper_bin), "--registry-auth", "helpers", docker={"credsStore": "sigtest"})
    assert image["status"] == "verified", image["reasons"]


def test_helpers_are_not_run_without_the_opt_in(estate: Estate, helper_bin: Path) -> None:
    image, log, _ = scan(estate, helper_env(helper_bin), docker={"credsStore": "sigtest"})
    assert image["status"] == "error" and "--registry-auth helpers" in log


@pytest.mark.parametrize(("name", "why"), [
    ("hangs", "docker-credential-hangs did not answer within 10 s; killed"),
    ("garbage", "docker-credential-garbage answered with something that is not a credential"),
    ("absent", "docker-credential-absent not found on PATH"),
])
def test_a_broken_helper_is_an_error_verdict_naming_it(estate: Estate, helper_bin: Path, name: str, why: str) -> None:
    image, _, code = scan(estate, helper_env(helper_bin), "--registry-auth", "helpers",
                          docker={"credHelpers": {estate.host: name}})
    assert image["status"] == "error" and code == 1
    assert any(why in r for r in image["reasons"]), image["reasons"]


# -- Amazon ECR through moto (server mode) --------------------------------------------------------


@pytest.fixture(scope="module")
def moto(estate: Estate) -> Iterator[str]:
    port = free_port()
    log_path = estate.tmp / "moto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", proc=proc, log_path=log_path, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def ecr_env(estate: Estate, endpoint: str, account: str) -> dict[str, str]:
    token = estate.tmp / "web-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2lnYXVkaXQifQ.c2ln")
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ROLE_ARN":
           f"arn:aws:iam::{account}:role/sigaudit-reader", "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
           "AWS_ROLE_SESSION_NAME": "sigaudit", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    return env


@pytest.fixture
def no_static_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_static_aws")
def test_ecr_through_irsa_web_identity_reads_the_registry(estate: Estate, moto: str) -> None:
    image, log, _ = scan(estate, ecr_env(estate, moto, ACCOUNT), "--registry-auth", f"ecr={estate.host}")
    assert image["status"] == "verified", image["reasons"]
    assert "registry credentials: Amazon ECR (AWS default credential chain)" in image["reasons"]
    assert "registry credentials from Amazon ECR" in log


@pytest.mark.usefixtures("no_static_aws")
def test_ecr_with_a_role_of_another_account_is_an_error(estate: Estate, moto: str) -> None:
    image, _, code = scan(estate, ecr_env(estate, moto, OTHER_ACCOUNT), "--registry-auth", f"ecr={estate.host}")
    assert image["status"] == "error" and code == 1, image["reasons"]


@pytest.mark.usefixtures("no_static_aws")
def test_ecr_api_unreachable_is_an_error_naming_ecr(estate: Estate) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    image, _, _ = scan(estate, ecr_env(estate, dead, ACCOUNT), "--registry-auth", f"ecr={estate.host}")
    assert image["status"] == "error"
    assert any("Amazon ECR" in r for r in image["reasons"]), image["reasons"]
