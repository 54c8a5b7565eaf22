"""The cloud's Ed25519 signing keys: made at run time in its data directory, never in the repo, and rotated.

Files in ``data_dir`` (the directory 0700, every private key 0600):

- ``signing-key.pem`` (PKCS#8) and ``signing-key.id``: the current signing key and the id
  cabinets know it by (a cloud that never rotated has only these);
- ``keyring.json``: after a rotation, the authority on which key is current, the *previous*
  key and the end of its overlap window, and every retired key; ``keys/<id>.pem`` holds the
  private key of the current and the previous key (a retired key's file is deleted).

Cabinets trust the public half as the config line ``keyid:base64`` (``sync.cloud_keys`` of
their TOML file) and then follow the key set announced in every signed config
(``ConfigBody.cloud_keys``, ``key_not_after``, ``retired_keys``; docs/protocol.md 5.1a).

Rotation (``rotate``): a new key signs commands and passes at once; during the overlap every
config is signed by the previous key and announces both, so a cabinet that only knows the old
key follows the chain; after the overlap (or ``retire``) configs are signed by the new key and
name the old one retired. ``KeyStoreSigner`` re-reads ``keyring.json`` when it changes, so a
running cloud follows a rotation made by the ``cabinet-cloud keys rotate`` command.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.errors import CloudError
from sync.commands import Command
from sync.config import Config
from sync.passes import OfflinePass
from sync.signing import (
    KeyAnnouncement,
    SignedEnvelope,
    Signer,
    generate_private_key,
    load_private_key_pem,
    private_key_pem,
    public_key_b64,
)

KEY_FILE = "signing-key.pem"
KEY_ID_FILE = "signing-key.id"
KEYRING_FILE = "keyring.json"
KEYS_DIR = "keys"
MAX_ANNOUNCED_RETIRED = 50  # newest retired ids named in each config (cabinets keep their own list)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SigningKeyError(CloudError, ValueError):
    """The signing key files are missing, unreadable or inconsistent; the message names the file."""

    status = 500  # the process refuses to start; no request sees one
    code = "signing_key_error"


def parse_duration(text: str) -> float:
    """Seconds in ``"7d"``, ``"12h"``, ``"90m"``, ``"30s"`` or a plain number of seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"duration {text!r}: use a number with s, m, h, d or w (e.g. 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _write_private(path: Path, data: bytes, exclusive: bool = True) -> None:
    """Create a file readable by its owner only, with no window of wider permissions."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically (temp file, fsync, rename, fsync of the directory)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class KeyRecord:
    """A key of this cloud's history: its id, public half, and when it stops or stopped."""

    id: str
    public: str
    not_after: float | None = None  # previous key: end of the overlap window
    retired_at: float | None = None


@dataclass(frozen=True)
class KeyringState:
    """What ``keyring.json`` holds (or what a cloud that never rotated implies)."""

    current: str
    previous: KeyRecord | None
    retired: tuple[KeyRecord, ...]
    changed_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "previous": self.previous.__dict__ if self.previous else None,
            "retired": [r.__dict__ for r in self.retired],
            "changed_at": self.changed_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyringState:
        prev = d.get("previous")
        return cls(
            str(d["current"]),
            KeyRecord(**prev) if prev else None,
            tuple(KeyRecord(**r) for r in d.get("retired", ())),
            float(d.get("changed_at", 0.0)),
        )

    def ids(self) -> set[str]:
        return (
            {self.current} | {r.id for r in self.retired} | ({self.previous.id} if self.previous else set())
        )


class KeyStoreSigner(Signer):
    """The cloud's signer over its data directory, following rotations made by another process.

    Commands and passes are signed by the current key; configs by the previous key while its
    overlap lasts (so cabinets that know only it can follow the chain), then by the current one.
    """

    def __init__(self, data_dir: str | Path, clock: Any = time.time) -> None:  # no Signer.__init__
        self.data_dir = Path(data_dir)
        self.clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._load()

    # -- state from disk ---------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = (self.data_dir / KEYRING_FILE).stat()
        except FileNotFoundError:
            st = (self.data_dir / KEY_FILE).stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        stamp = self._file_stamp()
        d = self.data_dir
        if (d / KEYRING_FILE).exists():
            try:
                state = KeyringState.from_json(json.loads((d / KEYRING_FILE).read_text()))
            except (ValueError, KeyError, TypeError) as e:
                raise SigningKeyError(f"{d / KEYRING_FILE}: unreadable ({e})") from e
            current = _load_pem(d / KEYS_DIR / f"{state.current}.pem")
            previous = None
            if state.previous is not None:
                prev_file = d / KEYS_DIR / f"{state.previous.id}.pem"
                previous = _load_pem(prev_file) if prev_file.exists() else None
        else:
            pem, kid = d / KEY_FILE, d / KEY_ID_FILE
            if not pem.exists():
                raise SigningKeyError(
                    f"{pem}: no signing key; create one with `cabinet-cloud keys --data-dir {d}`"
                )
            key_id = kid.read_text().strip() if kid.exists() else ""
            if not key_id:
                raise SigningKeyError(f"{kid}: missing or empty (the key id of {pem})")
            current = _load_pem(pem)
            state = KeyringState(key_id, None, (), 0.0)
            previous = None
        self._state = state
        self._current = current
        self._previous = previous
        self._stamp = stamp

    def _fresh(self) -> KeyringState:
        if self._file_stamp() != self._stamp:
            self._load()
        return self._state

    @property
    def state(self) -> KeyringState:
        """The key set on disk now (re-read when ``keyring.json`` changed)."""
        return self._fresh()

    # -- Signer ------------------------------------------------------------------------------

    @property
    def key_id(self) -> str:  # type: ignore[override]
        return self._fresh().current

    @property
    def private_key(self) -> Ed25519PrivateKey:  # type: ignore[override]
        self._fresh()
        return self._current

    def in_overlap(self, now: float) -> bool:
        prev = self._fresh().previous
        return prev is not None and prev.not_after is not None and now < prev.not_after

    def sign(self, message: Command | Config | OfflinePass) -> bytes:
        state = self._fresh()
        payload = message.encode()
        if isinstance(message, Config) and self.in_overlap(self.clock()) and self._previous is not None:
            assert state.previous is not None
            return SignedEnvelope(state.previous.id, payload, self._previous.sign(payload)).encode()
        return SignedEnvelope(state.current, payload, self._current.sign(payload)).encode()

    def announcement(self, now: float) -> KeyAnnouncement:
        state = self._fresh()
        keys = {state.current: public_key_b64(self._current.public_key())}
        retired = [r.id for r in state.retired]
        not_after: dict[str, float] = {}
        prev = state.previous
        if prev is not None and self.in_overlap(now):
            keys[prev.id] = prev.public
            not_after[prev.id] = float(prev.not_after or now)
        elif prev is not None:
            retired.append(prev.id)
        return KeyAnnouncement(keys, not_after, tuple(retired[-MAX_ANNOUNCED_RETIRED:]))

    def keys_changed_at(self, now: float) -> float:
        state = self._fresh()
        changed = state.changed_at
        prev = state.previous
        if prev is not None and prev.not_after is not None and now >= prev.not_after:
            changed = max(changed, prev.not_after)
        return changed


def _load_pem(path: Path) -> Ed25519PrivateKey:
    try:
        return load_private_key_pem(path.read_bytes())
    except FileNotFoundError as e:
        raise SigningKeyError(f"{path}: private key missing") from e
    except ValueError as e:
        raise SigningKeyError(f"{path}: not an Ed25519 private key ({e})") from e


@dataclass(frozen=True)
class CloudKey:
    """The cloud's signer and the line(s) a cabinet's config trusts it by."""

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
        """``keyid:base64`` of the current key, as ``sync.cloud_keys`` in a cabinet's config expects it."""
        return f"{self.key_id}:{self.public_b64}"

    @property
    def config_lines(self) -> list[str]:
        """Every key a new cabinet must trust now: the current key, and the previous one during an overlap."""
        ann = self.signer.announcement(time.time())
        return [
            f"{kid}:{b64}" for kid, b64 in sorted(ann.cloud_keys.items(), key=lambda kv: kv[0] != self.key_id)
        ]


def load_key(data_dir: str | Path, clock: Any = time.time) -> CloudKey:
    """The existing signing key of this cloud; ``SigningKeyError`` if there is none."""
    d = Path(data_dir)
    signer = KeyStoreSigner(d, clock)
    path = d / KEYS_DIR / f"{signer.key_id}.pem" if (d / KEYRING_FILE).exists() else d / KEY_FILE
    return CloudKey(signer, path)


def _new_key_id(now: float, taken: set[str]) -> str:
    base = "cloud-" + time.strftime("%Y%m%d", time.gmtime(now))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def load_or_create_key(data_dir: str | Path, clock: float | None = None) -> CloudKey:
    """This cloud's signing key, created on first use (the id says when: ``cloud-YYYYMMDD``)."""
    d = Path(data_dir)
    if (d / KEY_FILE).exists() or (d / KEYRING_FILE).exists():
        return load_key(d)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_private_key()
    key_id = _new_key_id(clock if clock is not None else time.time(), set())
    if not (d / KEY_ID_FILE).exists():
        (d / KEY_ID_FILE).write_text(key_id + "\n")
    try:
        _write_private(d / KEY_FILE, private_key_pem(key))
    except FileExistsError:  # another process made it just now: use theirs
        pass
    return load_key(d)


def rotate(data_dir: str | Path, overlap_s: float, now: float | None = None) -> tuple[str, str]:
    """Make a new signing key; the current one becomes *previous* for ``overlap_s`` seconds.

    A previous key still in its overlap is retired at once (two rotations in one window leave
    cabinets that missed the first one behind). Returns (old id, new id).
    """
    if overlap_s <= 0:
        raise SigningKeyError("the overlap must be longer than 0 (cabinets need time to learn the new key)")
    now = time.time() if now is None else now
    d = Path(data_dir)
    old = load_key(d).signer
    assert isinstance(old, KeyStoreSigner)
    state = old.state
    keys_dir = d / KEYS_DIR
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    old_file = keys_dir / f"{state.current}.pem"
    if not old_file.exists():  # first rotation of a cloud that had only signing-key.pem
        _write_private(old_file, private_key_pem(old.private_key))
    new_key = generate_private_key()
    new_id = _new_key_id(now, state.ids())
    _write_private(keys_dir / f"{new_id}.pem", private_key_pem(new_key))
    retired = list(state.retired)
    dropped = None
    if state.previous is not None:
        retired.append(KeyRecord(state.previous.id, state.previous.public, None, now))
        dropped = keys_dir / f"{state.previous.id}.pem"
    new_state = KeyringState(
        new_id,
        KeyRecord(state.current, public_key_b64(old.private_key.public_key()), now + overlap_s),
        tuple(retired),
        now,
    )
    _commit(d, new_state, new_key)
    if dropped is not None:
        dropped.unlink(missing_ok=True)
    return state.current, new_id


def retire(data_dir: str | Path, now: float | None = None) -> str | None:
    """End the overlap now: the previous key is retired and its private key deleted; returns its id."""
    now = time.time() if now is None else now
    d = Path(data_dir)
    signer = load_key(d).signer
    assert isinstance(signer, KeyStoreSigner)
    state = signer.state
    if state.previous is None:
        return None
    prev = state.previous
    new_state = KeyringState(
        state.current, None, (*state.retired, KeyRecord(prev.id, prev.public, None, now)), now
    )
    _commit(d, new_state, signer.private_key)
    (d / KEYS_DIR / f"{prev.id}.pem").unlink(missing_ok=True)
    return prev.id


def _commit(d: Path, state: KeyringState, current: Ed25519PrivateKey) -> None:
    """``keyring.json`` is the commit point; ``signing-key.*`` then mirror the current key."""
    _replace(d / KEYRING_FILE, (json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n").encode())
    _replace(d / KEY_FILE, private_key_pem(current))
    _replace(d / KEY_ID_FILE, (state.current + "\n").encode(), 0o644)


def describe(data_dir: str | Path, now: float | None = None) -> dict[str, Any]:
    """The key set as ``cabinet-cloud keys`` prints it."""
    now = time.time() if now is None else now
    signer = load_key(data_dir).signer
    assert isinstance(signer, KeyStoreSigner)
    ann = signer.announcement(now)
    return {
        "current": signer.key_id,
        "announced": dict(ann.cloud_keys),
        "overlap_until": dict(ann.key_not_after),
        "retired": list(ann.retired_keys),
        "configs_signed_by": signer.state.previous.id
        if signer.in_overlap(now) and signer.state.previous
        else signer.key_id,
    }
