"""Key-management and attestation peers on 127.0.0.1 for integration tests.

Fixtures:

* ``moto_kms`` (module): ``moto_server`` (moto in server mode, a separate HTTP process speaking the
  AWS KMS API) with ``.url``, ``.env`` (what the CLI needs: fake credentials, region,
  ``AWS_ENDPOINT_URL``), ``.client()`` (a boto3 KMS client), ``.create_key(spec)`` -> ARN and
  ``.sign(arn, message, algorithm)`` through KMS' own ``Sign``. Needs ``pip install 'moto[server]'``.
* ``grafeas_server`` (module): the open-source Grafeas v1beta1 server (``github.com/grafeas/grafeas``
  ``go/v1beta1/main``, built by ``make tools``) with in-memory storage and
  no TLS, bound to 127.0.0.1 by a config file. ``.project_url(project)``, ``.create_project``,
  ``.create_note``, ``.create_attestation``.

Vault/OpenBao, Cloud KMS, Azure Key Vault: no server can be obtained here (the Go module proxy refuses
openbao's modules and Vault is not packaged; the clouds publish no emulator), so their public keys are
tested through response parsing, and the evidence pack's signing through the hand-made REST fakes of
``tests/harness/fake_kms.py``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.tools import _missing, free_port, require_tool, stop_process, wait_for_http

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass
class MotoKms:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        return {**FAKE_AWS, "AWS_ENDPOINT_URL": self.url}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "kms",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_key(self, key_spec: str) -> str:
        meta = self.client().create_key(KeySpec=key_spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        return str(meta["Arn"])

    def sign(self, arn: str, message: bytes, algorithm: str) -> bytes:
        resp = self.client().sign(KeyId=arn, Message=message, MessageType="RAW", SigningAlgorithm=algorithm)
        return bytes(resp["Signature"])

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto(root: Path) -> MotoKms:
    exe = shutil.which("moto_server") or str(Path(__import__("sys").executable).parent / "moto_server")
    if not Path(exe).exists():
        _missing("moto_server not installed: .venv/bin/pip install 'moto[server]'")
    port = free_port()
    log_path = root / "moto.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/", timeout=60, proc=proc, log_path=log_path)
    except Exception:
        stop_process(proc)
        raise
    return MotoKms(url, proc, log_path)


@pytest.fixture(scope="module")
def moto_kms() -> Iterator[MotoKms]:
    root = Path(tempfile.mkdtemp(prefix="sigaudit-moto-"))
    server = start_moto(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class GrafeasServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def project_url(self, project: str) -> str:
        return f"{self.url}/v1beta1/projects/{project}"

    def _post(self, path: str, body: dict[str, Any], **params: str) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/v1beta1/{path}", json=body, params=params, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"grafeas POST {path}: {r.status_code} {r.text}")
        out: dict[str, Any] = r.json()
        return out

    def create_project(self, project: str) -> None:
        self._post("projects", {"name": f"projects/{project}"})

    def create_note(self, project: str, note: str) -> str:
        self._post(
            f"projects/{project}/notes",
            {"kind": "ATTESTATION", "attestationAuthority": {"hint": {"humanReadableName": note}}},
            noteId=note,
        )
        return f"projects/{project}/notes/{note}"

    def create_attestation(
        self, project: str, note_name: str, resource_url: str, payload: bytes, signature: bytes, key_id: str
    ) -> str:
        """An ATTESTATION occurrence as kritis writes it (v1beta1 genericSignedAttestation)."""
        occ = {
            "kind": "ATTESTATION",
            "noteName": note_name,
            "resource": {"uri": resource_url},
            "attestation": {
                "attestation": {
                    "genericSignedAttestation": {
                        "contentType": "SIMPLE_SIGNING_JSON",
                        "serializedPayload": base64.b64encode(payload).decode(),
                        "signatures": [{"signature": base64.b64encode(signature).decode(), "publicKeyId": key_id}],
                    }
                }
            },
        }
        return str(self._post(f"projects/{project}/occurrences", occ)["name"])

    def stop(self) -> None:
        stop_process(self.proc)


def start_grafeas(root: Path) -> GrafeasServer:
    exe = require_tool("grafeas")
    port = free_port()
    config = root / "grafeas.yaml"
    # Without a config file Grafeas listens on 0.0.0.0:8080; the shipped config turns on mutual TLS.
    config.write_text(
        "grafeas:\n  api:\n"
        f'    address: "127.0.0.1:{port}"\n'
        "    certfile:\n    keyfile:\n    cafile:\n"
        '  storage_type: "memstore"\n'
    )
    log_path = root / "grafeas.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([str(exe), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v1beta1/projects", timeout=60, proc=proc, log_path=log_path)
    except Exception:
        stop_process(proc)
        raise
    return GrafeasServer(url, proc, log_path)


@pytest.fixture(scope="module")
def grafeas_server() -> Iterator[GrafeasServer]:
    root = Path(tempfile.mkdtemp(prefix="sigaudit-grafeas-"))
    server = start_grafeas(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
