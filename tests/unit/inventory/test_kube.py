"""A kubeconfig that cannot be read is the user's input to fix (exit 2, naming the file), and its lines
— tokens, client keys — are never echoed to stderr, whatever the parser tripped on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "s3cr3t-bearer-token-do-not-print"
POLICY = (
    "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
    "    - name: r\n      images: ['*']\n      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n"
)
USER = f"users: [{{name: u, user: {{token: {SECRET}}}}}]\n"

BAD_KUBECONFIGS = {
    "not YAML at all": f"token={SECRET}\n\t: [{{\n",
    "a YAML error on the secret's line": f"apiVersion: v1\n{USER}clusters: [{{name: c, cluster: {{server: '{SECRET}\n",
    "a scalar": f'"{SECRET}"\n',
    "a list": f"- {SECRET}\n- 2\n",
    "lists of the wrong shape": f"{USER}clusters: 5\ncontexts: 7\ncurrent-context: c\n",
    "entries of the wrong shape": f"{USER}clusters: [x]\ncontexts: [{{name: c, context: 3}}]\ncurrent-context: c\n",
    "no current context": f"apiVersion: v1\n{USER}",
    "empty": "",
    "binary": "\x00\x01\xff" + SECRET,
}


@pytest.mark.parametrize("content", BAD_KUBECONFIGS.values(), ids=list(BAD_KUBECONFIGS))
def test_a_malformed_kubeconfig_is_a_configuration_error_naming_the_file_not_its_lines(
    tmp_path: Path, content: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    (tmp_path / "policy.yaml").write_text(POLICY)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    kubeconfig = tmp_path / "bad.kubeconfig"
    kubeconfig.write_bytes(content.encode("utf-8", "surrogateescape"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    proc = subprocess.run(
        [sys.executable, "-m", "scanner.cli", "scan", "--no-store", "--no-progress", "-o", "none",
         "--policy", str(tmp_path / "policy.yaml"), "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(kubeconfig) in proc.stderr and "kubeconfig" in proc.stderr
    assert "unexpected failure" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
