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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import oci
from tests.harness.cloud_creds import STATIC_AWS, irsa_env, moto_server, write_answering_helper, write_helper
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.tools import free_port

pytestmark = pytest.mark.integration

HELPER_USER, HELPER_SECRET = "helper-user", "Helper-Pa55word-5e1d90"
ACCOUNT, OTHER_ACCOUNT = "123456789012", "999999999999"
ECR_PASSWORD = f"{ACCOUNT}-auth-token"  # what moto's GetAuthorizationToken issues to the account's principals
GCP_TOKEN = "ya29.Gcp-Access-Token-3f9a1c"  # what the hand-made metadata server issues
ENTRA_TOKEN, ACR_REFRESH = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.Entra-Token-8b2e", "Acr-Refresh-Token-c07d55"
NULL_GUID = "00000000-0000-0000-0000-000000000000"
SECRETS = (HELPER_SECRET, ECR_PASSWORD, GCP_TOKEN, ENTRA_TOKEN, ACR_REFRESH)


@dataclass
class Estate:
    host: str
    digest: str
    policy: Path
    pods: Path
    tmp: Path
    upstream: str
    key: Path


def _estate_files(tmp: Path, host: str, digest: str, key: Path, *, insecure: bool) -> tuple[Path, Path]:
    """The policy and pods file of one image, ``host/team/app@digest``, signed with ``key``."""
    tmp.mkdir(parents=True, exist_ok=True)
    policy = tmp / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
        + (f"  insecureRegistries: ['{host}']\n" if insecure else "")
        + f"  rules:\n    - {{name: r, images: ['{host}/*'], "
        f"verifiers: [{{cosign: {{key: '{key}', ignoreTlog: true}}}}]}}\n"
    )
    pods = tmp / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("team", "p", [("c", f"{host}/team/app:1", f"{host}/team/app@{digest}")])]}))
    return policy, pods


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    from tests.harness.fixtures_registry import start_distribution

    tmp = tmp_path_factory.mktemp("credsources")
    reg = start_distribution(tmp / "reg", auth="htpasswd", users={
        HELPER_USER: HELPER_SECRET, "AWS": ECR_PASSWORD, "oauth2accesstoken": GCP_TOKEN, NULL_GUID: ACR_REFRESH})
    try:
        key = KeyPair.ecdsa()
        auth = (HELPER_USER, HELPER_SECRET)
        digest = oci.make_image(reg.url, "team/app", "1", auth=auth)
        sign_image(reg.url, reg.host, "team/app", digest, key, auth=auth)
        (tmp / "k.pub").write_text(key.public_pem)
        policy, pods = _estate_files(tmp, reg.host, digest, tmp / "k.pub", insecure=True)
        yield Estate(reg.host, digest, policy, pods, tmp, reg.url, tmp / "k.pub")
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def helper_bin(estate: Estate) -> Path:
    bindir = estate.tmp / "bin"
    write_answering_helper(bindir, "sigtest", {estate.host: (HELPER_USER, HELPER_SECRET)})
    write_helper(bindir, "hangs", "time.sleep(300)\n")
    write_helper(bindir, "garbage", f"print('{HELPER_SECRET} is not JSON')\n")
    return bindir


def scan(estate: Estate, env: dict[str, str], *flags: str, docker: dict | None = None,
         files: tuple[Path, Path] | None = None, codes: tuple[int, ...] = (0, 1)) -> tuple[dict, str, int]:
    home = estate.tmp / f"docker-{abs(hash((flags, json.dumps(docker), files)))}"
    home.mkdir(exist_ok=True)
    (home / "config.json").write_text(json.dumps(docker or {}))
    policy, pods = files or (estate.policy, estate.pods)
    r = subprocess.run(
        [sys.executable, "-m", "scanner.cli", "-vv", "scan", "--pods-file", str(pods), "--policy",
         str(policy), "--db", f"sqlite:///{home / 'scans.db'}", "-o", "json", "--no-progress", *flags],
        capture_output=True, env={**os.environ, **env, "DOCKER_CONFIG": str(home)}, timeout=180,
    )
    assert r.returncode in codes, r.stderr.decode()[-3000:]
    doc = json.loads(r.stdout)
    (image,) = doc["images"]
    out = r.stdout + r.stderr + b"".join(p.read_bytes() for p in home.glob("scans.db*"))
    for secret in SECRETS:
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
    with moto_server(estate.tmp) as url:
        yield url


def ecr_env(estate: Estate, endpoint: str, account: str) -> dict[str, str]:
    return irsa_env(endpoint, account, estate.tmp / "web-identity-token")


@pytest.fixture
def no_static_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STATIC_AWS:
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


# -- GCP and Azure: tested through the protocol, not a live cloud --------------------------------------
# Their token endpoints cannot run here: a hand-made GCE metadata server answers google-auth's
# compute-engine credentials (as on GKE with Workload Identity), and a hand-made managed identity endpoint
# answers azure-identity; a hand-made HTTPS front of the real registry answers ACR's /oauth2/exchange.


def test_gcr_through_application_default_credentials_reads_the_registry(estate: Estate) -> None:
    pytest.importorskip("google.auth", reason="google-auth (sigaudit[gcp], in the test extras)")
    from tests.harness.cloud_creds import gce_env, gce_metadata_server

    server = gce_metadata_server("sigaudit@proj.iam.gserviceaccount.com", GCP_TOKEN)
    try:
        image, _, _ = scan(estate, gce_env(server, estate.tmp / "gcloud"), "--registry-auth", f"gcr={estate.host}")
    finally:
        server.close()
    assert image["status"] == "verified", image["reasons"]
    assert "registry credentials: Google Artifact Registry/GCR (application default credentials)" in image["reasons"]
    assert any("/token" in path for _, path, _ in server.requests)


def test_gcr_without_a_metadata_server_is_an_error_naming_gcp(estate: Estate) -> None:
    pytest.importorskip("google.auth", reason="google-auth (sigaudit[gcp], in the test extras)")
    dead = f"127.0.0.1:{free_port()}"
    (estate.tmp / "gcloud-empty").mkdir(exist_ok=True)
    env = {"GCE_METADATA_HOST": dead, "GCE_METADATA_IP": dead, "CLOUDSDK_CONFIG": str(estate.tmp / "gcloud-empty"),
           "GOOGLE_APPLICATION_CREDENTIALS": ""}
    image, _, _ = scan(estate, env, "--registry-auth", f"gcr={estate.host}")
    assert image["status"] == "error"
    assert any("Google Artifact Registry/GCR" in r for r in image["reasons"]), image["reasons"]


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.harness.cloud_creds import AZURE_ENV_CLEARED

    for name in AZURE_ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("azure_env")
@pytest.mark.parametrize("entra", [ENTRA_TOKEN, "eyJ.another-identitys-token"], ids=["known", "unknown"])
def test_acr_through_managed_identity_and_the_oauth2_exchange(estate: Estate, entra: str) -> None:
    pytest.importorskip("azure.identity", reason="azure-identity (sigaudit[azure], in the test extras)")
    from tests.harness.cloud_creds import acr_front, azure_msi_endpoint

    msi = azure_msi_endpoint(entra, "identity-header-1")
    front, ca = acr_front(estate.upstream, estate.tmp / f"acr-{len(entra)}", entra_token=ENTRA_TOKEN,
                          refresh_token=ACR_REFRESH)
    try:
        files = _estate_files(estate.tmp / f"acr-files-{len(entra)}", front.host, estate.digest, estate.key,
                              insecure=False)
        env = {"IDENTITY_ENDPOINT": f"http://{msi.host}/msi/token", "IDENTITY_HEADER": "identity-header-1",
               "SSL_CERT_FILE": str(ca), "AZURE_CLIENT_ID": ""}
        image, _, _ = scan(estate, env, "--registry-auth", f"acr={front.host}", files=files)
    finally:
        front.close()
        msi.close()
    assert front.exchanges and front.exchanges[0]["service"] == front.host
    if entra == ENTRA_TOKEN:
        assert image["status"] == "verified", image["reasons"]
        assert "registry credentials: Azure Container Registry (azure-identity token exchange)" in image["reasons"]
    else:  # an identity the registry does not know: the exchange refuses it
        assert image["status"] == "error"
        assert any("oauth2/exchange answered 401" in r for r in image["reasons"]), image["reasons"]


def test_a_hanging_helper_never_holds_the_scan_past_its_deadline(estate: Estate, helper_bin: Path) -> None:
    import time

    started = time.monotonic()
    image, _, _ = scan(estate, helper_env(helper_bin), "--registry-auth", "helpers", "--deadline", "2",
                       docker={"credHelpers": {estate.host: "hangs"}}, codes=(3,))  # partial: exit 3
    assert image["status"] == "error"
    assert time.monotonic() - started < 8  # the helper's own limit is 10 s: the deadline (2 s) bounds it


# -- a cloud's token endpoint that never answers: the scan's --deadline bounds the SDK calls ---------
# boto3 (STS AssumeRoleWithWebIdentity, then ECR GetAuthorizationToken) and google-auth (the metadata
# server's token) have their own timeouts (60 s, 120 s, retries): without the deadline around them a
# hanging endpoint held the scan far past its deadline (AWS > 180 s, GCP 20.75 s with --deadline 2). The
# deadline is 6 s, not 2: on a loaded machine start-up and the pod list took 2 s, and the deadline passed
# before any source was asked (the reason then names no source).


@pytest.mark.usefixtures("no_static_aws")
def test_a_hanging_aws_endpoint_never_holds_the_scan_past_its_deadline(estate: Estate, stalling_registry: str) -> None:
    import time

    started = time.monotonic()
    image, _, _ = scan(estate, ecr_env(estate, f"http://{stalling_registry}", ACCOUNT), "--registry-auth",
                       f"ecr={estate.host}", "--deadline", "6", codes=(3,))  # partial: exit 3
    took = time.monotonic() - started
    assert image["status"] == "error"
    assert any("Amazon ECR" in r for r in image["reasons"]), image["reasons"]
    assert took < 14, f"the scan took {took:.1f} s with --deadline 6"


def test_a_hanging_metadata_server_never_holds_the_scan_past_its_deadline(estate: Estate,
                                                                          stalling_registry: str) -> None:
    pytest.importorskip("google.auth", reason="google-auth (sigaudit[gcp], in the test extras)")
    import time

    (estate.tmp / "gcloud-hang").mkdir(exist_ok=True)
    env = {"GCE_METADATA_HOST": stalling_registry, "GCE_METADATA_IP": stalling_registry,
           "CLOUDSDK_CONFIG": str(estate.tmp / "gcloud-hang"), "GOOGLE_APPLICATION_CREDENTIALS": "",
           "NO_GCE_CHECK": "False"}
    started = time.monotonic()
    image, _, _ = scan(estate, env, "--registry-auth", f"gcr={estate.host}", "--deadline", "6", codes=(3,))
    took = time.monotonic() - started
    assert image["status"] == "error"
    assert any("Google Artifact Registry/GCR" in r for r in image["reasons"]), image["reasons"]
    assert took < 14, f"the scan took {took:.1f} s with --deadline 6"
