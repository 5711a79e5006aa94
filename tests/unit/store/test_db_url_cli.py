"""A database URL sigaudit cannot use is the user's configuration to fix: exit 2 naming the supported
schemes, never exit 3 ("the scan failed"), and never the password — through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

KEY = Path(__file__).resolve().parents[2] / "data/vectors/cosign/legacy-oci-connaisseur/keys/alice.pub.pem"
URLS = ["mysql://u:Pw5ecret@h/db", "oracle+cx_oracle://u:Pw5ecret@h/db?password=Pw5ecret",
        "sqlite+aiosqlite://u:Pw5ecret@h/db", "mysql:/u:Pw5ecret@h/db", "not a url:Pw5ecret@h"]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SIGAUDIT_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, check=False)


@pytest.mark.parametrize("url", URLS)
def test_db_upgrade_with_an_unsupported_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    proc = _cli(tmp_path, "db", "upgrade", "--db", url)
    assert proc.returncode == 2, proc.stderr
    assert "sqlite" in proc.stderr and "postgresql" in proc.stderr
    assert "Pw5ecret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("url", URLS[:1] + URLS[3:4])
def test_scan_with_an_unsupported_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": []}')
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nmetadata: {name: t}\nspec:\n  rules:\n"
        f"    - name: all\n      images: ['*']\n      verifiers:\n        - cosign: {{key: {KEY}}}\n")
    proc = _cli(tmp_path, "scan", "--pods-file", str(tmp_path / "pods.json"),
                "--policy", str(tmp_path / "policy.yaml"), "--db", url)
    assert proc.returncode == 2, proc.stderr
    assert "unsupported database 'mysql'" in proc.stderr or "not a database URL" in proc.stderr
    assert "postgresql" in proc.stderr and "Pw5ecret" not in proc.stderr + proc.stdout
