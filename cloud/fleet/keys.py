"""The cloud's Ed25519 signing key: made once per cloud, kept in its data directory, never in the repo.

Files in ``data_dir``: ``signing-key.pem`` (PKCS#8, mode 0600) and ``signing-key.id`` (the key
id cabinets know it by). Cabinets trust the public half as the config line ``keyid:base64``
(``sync.cloud_keys`` of their TOML file, and ``cloud_keys`` of every signed config).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sync.signing import Signer, generate_private_key, load_private_key_pem, private_key_pem, public_key_b64

KEY_FILE = "signing-key.pem"
KEY_ID_FILE = "signing-key.id"


class SigningKeyError(ValueError):
    """The signing key files are missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class CloudKey:
    """The cloud's signer and the line a cabinet's config trusts it by."""

    signer: Signer
    path: Path

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    @property
    def public_b64(self) -> str:
        return public_key_b64(self.signer.public_key)

    @property
    def config_line(self) -> str:
        """``keyid:base64`` as ``sync.cloud_keys`` in a cabinet's config expects it."""
        return f"{self.key_id}:{self.public_b64}"


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only, with no window of wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_key(data_dir: str | Path) -> CloudKey:
    """The existing signing key of this cloud; ``SigningKeyError`` if there is none."""
    d = Path(data_dir)
    pem, kid = d / KEY_FILE, d / KEY_ID_FILE
    if not pem.exists():
        raise SigningKeyError(f"{pem}: no signing key; create one with `cabinet-cloud keys --data-dir {d}`")
    try:
        key = load_private_key_pem(pem.read_bytes())
    except ValueError as e:
        raise SigningKeyError(f"{pem}: not an Ed25519 private key ({e})") from e
    key_id = kid.read_text().strip() if kid.exists() else ""
    if not key_id:
        raise SigningKeyError(f"{kid}: missing or empty (the key id of {pem})")
    return CloudKey(Signer(key, key_id), pem)


def load_or_create_key(data_dir: str | Path, clock: float | None = None) -> CloudKey:
    """This cloud's signing key, created on first use (the id says when: ``cloud-YYYYMMDD``)."""
    d = Path(data_dir)
    if (d / KEY_FILE).exists():
        return load_key(d)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_private_key()
    key_id = "cloud-" + time.strftime("%Y%m%d", time.gmtime(clock if clock is not None else time.time()))
    if not (d / KEY_ID_FILE).exists():
        (d / KEY_ID_FILE).write_text(key_id + "\n")
    try:
        _write_private(d / KEY_FILE, private_key_pem(key))
    except FileExistsError:  # another process made it just now: use theirs
        return load_key(d)
    key_id = (d / KEY_ID_FILE).read_text().strip()
    return CloudKey(Signer(key, key_id), d / KEY_FILE)
