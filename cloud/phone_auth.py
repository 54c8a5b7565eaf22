"""Phone sign-in with a one-time code sent by SMS: sign up on the first verify, sign in after.

- ``start(phone, ip)``: a random 6-digit code (``secrets``) for an E.164 number, sent through the
  configured :class:`cloud.sms.SmsSender`. Only a salted HMAC of it is stored, with its expiry; a
  new code replaces the phone's pending one. Throttled per phone and per client address with the
  login throttle's atomic counters (``auth_throttle``, migration 0008).
- ``verify(phone, code, ip)``: each try is counted first (one ``UPDATE ... RETURNING``, so
  concurrent guesses cannot share a try), at most ``max_attempts`` per code, and per client address;
  the right code is deleted as it is used, so it works once. It opens a session of the account with
  that phone, creating a renter account on the first verify. With ``into_user`` (the caller is
  signed in already) the phone is added to that account: an account may have an email and
  password, a phone, or both.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from cloud.db import sms_codes, users
from cloud.sms import SmsSender
from cloud.users import PHONE_ONLY_EMAIL, Accounts, LoginThrottled, Session, UserError, _bump

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
"""An E.164 number: ``+``, the country code and the subscriber number, 7 to 15 digits, nothing else."""
CODE_DIGITS = 6


class PhoneError(UserError):
    """The phone number or the code is not in the expected form."""

    status = 400
    code = "bad_request"


class SmsThrottled(LoginThrottled):
    """Too many codes asked for (per phone or per address) or tried (per address); see Retry-After."""

    status = 429
    code = "sms_throttled"


class CodeRejected(UserError):
    """Wrong, expired, used or void code (deliberately not saying which account it would open)."""

    status = 401
    code = "code_rejected"


class PhoneTaken(UserError):
    """The phone already signs in another account."""

    status = 409
    code = "phone_taken"


def check_phone(phone: Any) -> str:
    if not isinstance(phone, str) or not E164.fullmatch(phone):
        raise PhoneError(
            f"phone must be an E.164 number like +8613800138000 (+, country code, number; no spaces), "
            f"got {str(phone)[:32]!r}"
        )
    return phone


def _digest(salt: str, phone: str, code: str) -> str:
    return hmac.new(salt.encode(), f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    session: Session
    created: bool  # a new account was made (sign-up)


class PhoneSignIn:
    """The phone sign-in service (one per process)."""

    def __init__(
        self,
        engine: Engine,
        accounts: Accounts,
        sender: SmsSender,
        clock: Callable[[], float],
        *,
        code_ttl_s: int = 300,
        max_attempts: int = 5,
        max_per_phone: int = 5,
        max_per_ip: int = 20,
        window_s: int = 900,
    ) -> None:
        self.engine = engine
        self.accounts = accounts
        self.sender = sender
        self.clock = clock
        self.code_ttl_s = code_ttl_s
        self.max_attempts = max_attempts
        self.max_per_phone = max_per_phone
        self.max_per_ip = max_per_ip
        self.window_s = window_s

    def _throttle(self, key: str, limit: int, what: str) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            count, start = _bump(conn, key, now, self.window_s)
        if count > limit:
            retry = int(start + self.window_s - now) + 1
            raise SmsThrottled(f"too many {what}; retry in {retry} s", retry)

    def start(self, phone: Any, ip: str = "unknown") -> dict[str, Any]:
        """Send a new code to ``phone`` (replacing a pending one)."""
        phone = check_phone(phone)
        self._throttle(f"sms:ip:{ip}", self.max_per_ip, "codes asked for from this address")
        self._throttle(f"sms:phone:{phone}", self.max_per_phone, "codes sent to this phone")
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_hex(16)
        now = self.clock()
        values = {"phone": phone, "salt": salt, "code_hash": _digest(salt, phone, code), "created_at": now,
                  "expires_at": now + self.code_ttl_s, "attempts": 0}  # fmt: skip
        with self.engine.begin() as conn:
            upsert: Any = postgresql.insert if conn.engine.dialect.name == "postgresql" else sqlite.insert
            stmt = upsert(sms_codes).values(**values)
            conn.execute(stmt.on_conflict_do_update(index_elements=[sms_codes.c.phone], set_=values))
        minutes = max(1, self.code_ttl_s // 60)
        self.sender.send(
            phone, f"your code is {code} (valid {minutes} min). 您的验证码是 {code}，{minutes}分钟内有效。"
        )
        return {"sent": True, "expires_in_s": self.code_ttl_s}

    def verify(self, phone: Any, code: Any, ip: str = "unknown", into_user: int | None = None) -> SignedIn:
        """Check the code and open a session (see the module's docstring)."""
        phone = check_phone(phone)
        if not isinstance(code, str) or not re.fullmatch(rf"[0-9]{{{CODE_DIGITS}}}", code):
            raise PhoneError(f"code must be the {CODE_DIGITS} digits of the SMS")
        self._throttle(f"sms-verify:ip:{ip}", self.max_per_ip, "codes tried from this address")
        now = self.clock()
        outcome, left, signed = "none", 0, None
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    update(sms_codes)
                    .where(sms_codes.c.phone == phone, sms_codes.c.expires_at > now,
                           sms_codes.c.attempts < self.max_attempts)
                    .values(attempts=sms_codes.c.attempts + 1)
                    .returning(sms_codes.c.salt, sms_codes.c.code_hash, sms_codes.c.attempts)
                ).first()  # fmt: skip
                if row is None:
                    outcome = "none"
                elif not hmac.compare_digest(_digest(row.salt, phone, code), row.code_hash):
                    outcome, left = "wrong", self.max_attempts - row.attempts
                    if left <= 0:
                        conn.execute(delete(sms_codes).where(sms_codes.c.phone == phone))
                else:
                    conn.execute(delete(sms_codes).where(sms_codes.c.phone == phone))
                    outcome, signed = self._sign_in(conn, phone, into_user)
        except IntegrityError:  # another account took the phone at the same moment
            raise PhoneTaken("this phone already signs in another account") from None
        if outcome == "wrong":
            more = f"{left} more tries" if left else "no tries left: ask for a new code"
            raise CodeRejected(f"wrong code ({more})")
        if outcome == "none":
            raise CodeRejected(
                "no valid code for this phone (expired, used or too many tries): ask for a new one"
            )
        if outcome == "taken":
            raise PhoneTaken("this phone already signs in another account")
        if outcome == "operator":
            raise PhoneError("operator accounts sign in with their email and password only")
        assert signed is not None
        return signed

    def _sign_in(self, conn: Any, phone: str, into_user: int | None) -> tuple[str, SignedIn | None]:
        owner = conn.execute(
            select(users.c.id, users.c.role).where(users.c.phone == phone, users.c.deleted_at.is_(None))
        ).first()
        if into_user is not None:
            if owner is not None and owner.id != into_user:
                return "taken", None
            role = conn.execute(select(users.c.role).where(users.c.id == into_user)).scalar_one()
            if role != "renter":
                return "operator", None
            conn.execute(update(users).where(users.c.id == into_user).values(phone=phone))
            return "ok", SignedIn(self.accounts.open_session(conn, into_user), False)
        if owner is not None:
            if owner.role != "renter":
                return "operator", None
            return "ok", SignedIn(self.accounts.open_session(conn, owner.id), False)
        uid = conn.execute(
            insert(users)
            .values(
                email=f"{phone[1:]}{PHONE_ONLY_EMAIL}", phone=phone, role="renter", created_at=self.clock()
            )
            .returning(users.c.id)
        ).scalar_one()
        return "ok", SignedIn(self.accounts.open_session(conn, uid), True)
