"""Renter and operator accounts: registration, scrypt passwords, rate-limited login, sessions.

Session tokens are random and stored only as their SHA-256, so a leaked database does not
log anyone in. Deleting an account erases personal data; rentals and money records stay
(bookkeeping law), attached to the anonymous user id.

Changing the card or deleting the account revokes the renter's outstanding offline passes
(issue 11.1): their holds, placed on the old card when each pass was issued, stay until the
pass rentals settle, and the revocation reaches every cabinet in the next signed config.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.db import auth_throttle, login_failures, passes, payment_methods, rentals, sessions, users
from cloud.errors import CloudError
from sync.events import RentalStatus

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
MIN_PASSWORD = 10
PHONE_ONLY_EMAIL = "@phone.invalid"
"""``users.email`` of an account made by phone sign-in (the column is the unique, NOT NULL login
name; this reserved domain can never be registered or receive mail, and the API shows null)."""


class UserError(CloudError, ValueError):
    """A request about an account cannot be done; the message says why."""

    status = 400
    code = "bad_request"


class MethodNotFound(UserError):
    """No such saved payment method in the account."""

    status = 404
    code = "not_found"


class AlreadyRegistered(UserError):
    """The email already has an account."""

    status = 409
    code = "already_registered"


class LoginFailed(UserError):
    """Wrong email or password (deliberately not saying which)."""

    status = 401
    code = "login_failed"


class LoginThrottled(UserError):
    """Too many failed logins; ``retry_after_s`` says when to try again."""

    status = 429
    code = "login_throttled"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class SignupThrottled(LoginThrottled):
    """Too many sign-ups from one address; ``retry_after_s`` says when to try again."""

    status = 429
    code = "signup_throttled"


class NotAuthenticated(UserError):
    """No bearer token, a malformed one, or one that names no live session."""

    status = 401
    code = "not_authenticated"

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class User:
    id: int
    email: str | None  # None: an account made by phone sign-in (no email)
    name: str | None
    role: str
    has_card: bool
    phone: str | None = None  # E.164, verified by a one-time code (cloud/phone_auth.py)


@dataclass(frozen=True)
class Session:
    token: str  # shown once, to the client; only its hash is stored
    user: User
    expires_at: float


def hash_password(password: str, n: int = 2**14) -> str:
    """scrypt with a random salt, encoded as ``scrypt$n$r$p$salt$hash`` (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    return f"scrypt${n}$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, encoded: str | None) -> bool:
    if not encoded:
        return False
    try:
        _, n, r, p, salt, digest = encoded.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _user(row: Any) -> User:
    email = None if row.email.endswith(PHONE_ONLY_EMAIL) else row.email
    return User(row.id, email, row.name, row.role, bool(row.card_token), row.phone)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bump(conn: Connection, key: str, now: float, window_s: int) -> tuple[int, float]:
    """Count one more attempt for ``key`` in its current window; returns (count, window start).

    One ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` (SQLite and PostgreSQL): the row is
    locked while it is bumped, so two concurrent requests never both see the old count. A window
    that has passed starts again at 1.
    """
    dialect = conn.engine.dialect.name
    from sqlalchemy.dialects import postgresql, sqlite

    upsert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert  # the same ON CONFLICT API
    expired = auth_throttle.c.window_start <= now - window_s
    stmt = upsert(auth_throttle).values(key=key, window_start=now, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[auth_throttle.c.key],
        set_={
            "count": case((expired, 1), else_=auth_throttle.c.count + 1),
            "window_start": case((expired, now), else_=auth_throttle.c.window_start),
        },
    ).returning(auth_throttle.c.count, auth_throttle.c.window_start)
    count, start = conn.execute(stmt).one()
    return int(count), float(start)


class Accounts:
    """The account service (construct once per process with the engine and a clock)."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        *,
        session_ttl_s: int = 30 * 86400,
        max_failures_account: int = 5,
        max_failures_ip: int = 20,
        window_s: int = 900,
        scrypt_n: int = 2**14,
        max_signups_ip: int = 10,
        signup_window_s: int = 3600,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.session_ttl_s = session_ttl_s
        self.max_failures_account = max_failures_account
        self.max_failures_ip = max_failures_ip
        self.window_s = window_s
        self.scrypt_n = scrypt_n
        self.max_signups_ip = max_signups_ip
        self.signup_window_s = signup_window_s
        self._dummy_hash = hash_password(secrets.token_hex(8), scrypt_n)

    def register(
        self, email: str, password: str, name: str | None = None, role: str = "renter", ip: str | None = None
    ) -> User:
        """Create an account; the email is the login name (case-insensitive).

        With ``ip`` (a sign-up over the API), every attempt counts against that address, at most
        ``max_signups_ip`` per ``signup_window_s``: each one costs a scrypt hash and a row.
        """
        if ip is not None:
            now = self.clock()
            with self.engine.begin() as conn:
                count, start = _bump(conn, f"signup:{ip}", now, self.signup_window_s)
            if count > self.max_signups_ip:
                retry = int(start + self.signup_window_s - now) + 1
                raise SignupThrottled(f"too many sign-ups from this ip; retry in {retry} s", retry)
        email = email.strip().lower()
        if not EMAIL.match(email) or email.endswith(PHONE_ONLY_EMAIL):
            raise UserError(f"email {email!r} does not look like an address")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"password must have at least {MIN_PASSWORD} characters")
        if role not in ("renter", "operator"):
            raise UserError(f"role must be renter or operator, not {role!r}")
        encoded = hash_password(password, self.scrypt_n)
        try:
            with self.engine.begin() as conn:
                uid = conn.execute(
                    insert(users)
                    .values(email=email, name=name, password_hash=encoded, role=role, created_at=self.clock())
                    .returning(users.c.id)
                ).scalar_one()
        except IntegrityError as e:
            raise AlreadyRegistered(f"an account for {email} already exists") from e
        return self.get(uid)

    def get(self, user_id: int) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users).where(users.c.id == user_id, users.c.deleted_at.is_(None))
            ).first()
        if row is None:
            raise UserError(f"no user {user_id}")
        return _user(row)

    def login(self, email: str, password: str, ip: str = "unknown") -> Session:
        """Check the password and open a session; refused after too many recent failures.

        Each attempt first takes its place in the per-account and per-address counters (one
        atomic statement each, in one transaction), then spends the scrypt time: concurrent
        guesses are counted while they are still running, so no burst gets past the limit.
        A success clears the account's counter and gives its place back to the address's.
        """
        email = email.strip().lower()
        now = self.clock()
        keys = {f"account:{email}": self.max_failures_account, f"ip:{ip}": self.max_failures_ip}
        with self.engine.begin() as conn:
            counts = {key: _bump(conn, key, now, self.window_s) for key in keys}
            row = conn.execute(
                select(users).where(users.c.email == email, users.c.deleted_at.is_(None))
            ).first()
        for key, limit in keys.items():
            count, window_start = counts[key]
            if count > limit:
                retry = int(window_start + self.window_s - now) + 1
                raise LoginThrottled(
                    f"too many failed logins for this {key.split(':')[0]}; retry in {retry} s", retry
                )
        # always spend the scrypt time, so timing does not tell which emails exist
        ok = check_password(password, row.password_hash if row else self._dummy_hash) and row is not None
        if not ok:
            raise LoginFailed("wrong email or password")
        assert row is not None
        with self.engine.begin() as conn:
            conn.execute(delete(auth_throttle).where(auth_throttle.c.key == f"account:{email}"))
            conn.execute(
                update(auth_throttle)
                .where(auth_throttle.c.key == f"ip:{ip}", auth_throttle.c.count > 0)
                .values(count=auth_throttle.c.count - 1)
            )
            return self.open_session(conn, row.id)

    def open_session(self, conn: Connection, user_id: int) -> Session:
        """A new session of ``user_id`` in the caller's transaction (its token is shown once)."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        conn.execute(
            insert(sessions).values(
                token_hash=_token_hash(token),
                user_id=user_id,
                created_at=now,
                expires_at=now + self.session_ttl_s,
            )
        )
        user = _user(conn.execute(select(users).where(users.c.id == user_id)).one())
        return Session(token, user, now + self.session_ttl_s)

    def authenticate(self, token: str | None) -> User:
        """The user a bearer token belongs to; raises NotAuthenticated."""
        if not token:
            raise NotAuthenticated("missing bearer token (log in at POST /api/login)")
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sessions.c.user_id).where(
                    sessions.c.token_hash == _token_hash(token),
                    sessions.c.revoked_at.is_(None),
                    sessions.c.expires_at > self.clock(),
                )
            ).first()
        if row is None:
            raise NotAuthenticated("session token unknown, expired or logged out")
        try:
            return self.get(row.user_id)
        except UserError as e:
            raise NotAuthenticated("the account of this session was deleted") from e

    def logout(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.token_hash == _token_hash(token))
                .values(revoked_at=self.clock())
            )

    def set_card(self, user_id: int, card_token: str) -> User:
        """Attach the provider's token of the renter's card (we never see card numbers).

        A different card revokes the renter's outstanding offline passes (``revoke_passes``).
        """
        if not card_token or len(card_token) > 200:
            raise UserError("card_token must be a provider token of 1 to 200 characters")
        with self.engine.begin() as conn:
            old = conn.execute(select(users.c.card_token).where(users.c.id == user_id)).scalar_one_or_none()
            conn.execute(update(users).where(users.c.id == user_id).values(card_token=card_token))
            if old != card_token:
                revoke_passes(conn, user_id, self.clock(), "card changed")
        return self.get(user_id)

    def add_payment_method(self, user_id: int, provider: str, token: str, label: str = "") -> dict[str, Any]:
        """Save a method of one provider (its own reference: we never see card numbers)."""
        if not token or len(token) > 400:
            raise UserError("token must be a provider reference of 1 to 400 characters")
        with self.engine.begin() as conn:
            method_id = conn.execute(
                insert(payment_methods)
                .values(
                    user_id=user_id,
                    provider=provider,
                    token=token,
                    label=label[:100],
                    created_at=self.clock(),
                )
                .returning(payment_methods.c.id)
            ).scalar_one()
        return {"id": method_id, "provider": provider, "label": label[:100]}

    def payment_methods(self, user_id: int) -> list[dict[str, Any]]:
        """The renter's saved methods, newest first (tokens are not shown back)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(payment_methods)
                .where(payment_methods.c.user_id == user_id, payment_methods.c.deleted_at.is_(None))
                .order_by(payment_methods.c.id.desc())
            ).mappings()
            return [
                {"id": r["id"], "provider": r["provider"], "label": r["label"], "created_at": r["created_at"]}
                for r in rows
            ]

    def delete_payment_method(self, user_id: int, method_id: int) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(payment_methods)
                .where(
                    payment_methods.c.id == method_id,
                    payment_methods.c.user_id == user_id,
                    payment_methods.c.deleted_at.is_(None),
                )
                .values(deleted_at=self.clock())
            ).rowcount
        if not changed:
            raise MethodNotFound(f"no payment method {method_id} in this account")

    def card_token(self, user_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.card_token).where(users.c.id == user_id)).scalar_one_or_none()

    def delete(self, user_id: int) -> None:
        """Erase personal data; rentals, payments and the journal keep the anonymous id."""
        with self.engine.begin() as conn:
            row = conn.execute(select(users.c.email).where(users.c.id == user_id)).first()
            if row is None:
                raise UserError(f"no user {user_id}")
            open_rentals = conn.execute(
                select(func.count()).where(
                    rentals.c.user_id == user_id,
                    rentals.c.status.in_((RentalStatus.PENDING, RentalStatus.ACTIVE)),
                )
            ).scalar_one()
            if open_rentals:
                raise UserError(
                    "the account has a rental in progress: return the battery before deleting the account"
                )
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    email=f"deleted-{user_id}@invalid",
                    phone=None,
                    name=None,
                    password_hash=None,
                    card_token=None,
                    deleted_at=self.clock(),
                )
            )
            conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            conn.execute(delete(login_failures).where(login_failures.c.key == f"account:{row.email}"))
            revoke_passes(conn, user_id, self.clock(), "account deleted")


def revoke_passes(conn: Connection, user_id: int, now: float, reason: str) -> list[str]:
    """Revoke the renter's unexpired, unrevoked passes; returns their ids.

    Their holds are kept: a cabinet that has not yet had the new config may still rent on one,
    and that rental draws on the hold. The fleet link republishes every cabinet's config when
    a revocation is newer than it (``Signatures.configs_behind_revocations``).
    """
    ids = list(
        conn.execute(
            select(passes.c.pass_id).where(
                passes.c.user_id == user_id, passes.c.revoked_at.is_(None), passes.c.expires_at > now
            )
        ).scalars()
    )
    if ids:
        conn.execute(
            update(passes).where(passes.c.pass_id.in_(ids)).values(revoked_at=now, revoke_reason=reason)
        )
    return ids
