"""No secrets in the repository: keys and certificates are made at provisioning, never committed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
KEY_FILES = re.compile(r"(\.(pem|key|crt|p12|pfx|jks)|(^|/)id_(rsa|ed25519|ecdsa)|(^|/)\.env)$")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    return [f for f in out.stdout.decode().split("\0") if f]


def test_no_private_key_or_key_file_is_tracked() -> None:
    files = tracked_files()
    assert len(files) > 50, "git ls-files must list the project (is this a checkout?)"
    named = [f for f in files if KEY_FILES.search(f)]
    holding = [f for f in files if (ROOT / f).is_file() and PRIVATE_KEY.search((ROOT / f).read_bytes())]
    assert named == [] and holding == [], f"secrets in the repository: {named + holding}"


def test_key_directories_and_local_configs_stay_ignored() -> None:
    for path in ("cloud-data/signing-key.pem", "var/demo/cloud/cloud.db", "cabinet.toml"):
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True, timeout=30)
        assert r.returncode == 0, (
            f"{path} would not be ignored by git: keys or local secrets could be committed"
        )
