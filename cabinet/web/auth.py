"""Technician credentials, one-time setup code, login throttling, sessions and CSRF tokens.

No default password exists: a credential is set at provisioning (``cabinet tech set-password``)
or, on a cabinet without one, with the one-time setup code the cabinet writes to its log at
start-up. Passwords are stored as scrypt hashes in ``<data_dir>/technicians.json`` (0600).
Sessions live in memory only (a restart logs everybody out), with idle and absolute timeouts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: scrypt cost: 2^14 x 8 x 1 = 16 MiB; 43 ms per hash measured on the x86 dev machine (a Pi 4 is slower,
#: still well under a second), run off the event loop.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 10
USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
CREDENTIAL_FILE = "technicians.json"


class CredentialError(ValueError):
    """A user name or password does not meet the rules (the message says which)."""


def check_new(user: str, password: str) -> None:
    """Refuse user names and passwords that are unusable or too weak."""
    if not USER_RE.match(user or ""):
        raise CredentialError("user name: 1-32 letters, digits, '.', '_' or '-'")
    if len(password or "") < MIN_PASSWORD:
        raise CredentialError(f"password: at least {MIN_PASSWORD} characters")
    if password.lower() in {user.lower(), "password123", "cabinet1234"}:
        raise CredentialError("password: too easy to guess")


def hash_password(password: str, salt: bytes | None = None) -> dict[str, object]:
    """An scrypt record for ``password`` (salt, cost parameters, hash), JSON-ready."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024, dklen=32
    )
    return {
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": salt.hex(),
        "hash": digest.hex(),
    }


def password_matches(record: dict[str, object], password: str) -> bool:
    """Constant-time check of ``password`` against a stored scrypt record."""
    digest = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(str(record["salt"])),
        n=int(record["n"]),  # type: ignore[call-overload]
        r=int(record["r"]),  # type: ignore[call-overload]
        p=int(record["p"]),  # type: ignore[call-overload]
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    return hmac.compare_digest(digest.hex(), str(record["hash"]))


class Credentials:
    """The technicians' password file: user -> scrypt record."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / CREDENTIAL_FILE

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise CredentialError(f"{self.path}: unreadable technician credential file ({e})") from e
        return dict(data.get("users", {}))

    def exists(self) -> bool:
        """True once at least one technician has a password."""
        return bool(self._load())

    def users(self) -> list[str]:
        return sorted(self._load())

    def set_password(self, user: str, password: str) -> None:
        """Create or replace ``user``'s password (atomic write, file mode 0600)."""
        check_new(user, password)
        users = self._load()
        users[user] = hash_password(password)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"users": users}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def check(self, user: str, password: str) -> bool:
        """True when ``user`` exists and ``password`` is theirs (the KDF runs even for unknown users)."""
        record = self._load().get(user)
        if record is None:
            password_matches(_DUMMY, password)  # same cost: no user enumeration by timing
            return False
        return password_matches(record, password)


_DUMMY = hash_password("not a password", salt=b"\0" * 16)


class SetupCode:
    """A one-time code that lets the first technician set a password; gone once used."""

    def __init__(self) -> None:
        raw = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(12))
        self.code: str | None = f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"

    def matches(self, text: str) -> bool:
        if self.code is None:
            return False
        given = re.sub(r"[\s-]", "", text or "").upper()
        return hmac.compare_digest(given, self.code.replace("-", ""))

    def use(self) -> None:
        self.code = None


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


class Throttle:
    """Exponential back-off of failed logins, per user and per client address.

    The first ``free`` failures cost nothing; each later one doubles the wait (``base_s``,
    2x, 4x ... up to ``max_s``). While a key waits, attempts are refused without checking
    the password, so guessing is no faster than the back-off allows.
    """

    def __init__(
        self,
        free: int = 3,
        base_s: float = 2.0,
        max_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self._f: dict[str, _Failures] = {}

    def wait_s(self, *keys: str) -> float:
        """Seconds until an attempt for these keys is allowed (0: now)."""
        now = self.clock()
        return max([0.0] + [f.blocked_until - now for k in keys if (f := self._f.get(k))])

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for k in keys:
            f = self._f.setdefault(k, _Failures())
            f.count += 1
            if f.count > self.free:
                f.blocked_until = now + min(self.max_s, self.base_s * 2 ** (f.count - self.free - 1))

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._f.pop(k, None)


@dataclass
class Session:
    user: str
    csrf: str
    created: float
    last_seen: float
    data: dict[str, str] = field(default_factory=dict)


class Sessions:
    """Logged-in technicians by session token, with idle and absolute timeouts."""

    def __init__(self, idle_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.max_s, self.clock = idle_s, max_s, clock
        self._by_token: dict[str, Session] = {}

    def create(self, user: str) -> tuple[str, Session]:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        s = Session(user=user, csrf=secrets.token_urlsafe(24), created=now, last_seen=now)
        self._by_token[_key(token)] = s
        return token, s

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token`` (touching it), or None when unknown or expired."""
        if not token:
            return None
        s = self._by_token.get(_key(token))
        if s is None:
            return None
        now = self.clock()
        if now - s.last_seen > self.idle_s or now - s.created > self.max_s:
            del self._by_token[_key(token)]
            return None
        s.last_seen = now
        return s

    def end(self, token: str | None) -> None:
        if token:
            self._by_token.pop(_key(token), None)

    def __len__(self) -> int:
        return len(self._by_token)


def _key(token: str) -> str:
    """Sessions are kept by a hash of their token, so a memory dump does not hand them out."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf, given or "")
