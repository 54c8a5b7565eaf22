"""What the cloud signs for cabinets: commands, configs and offline passes (blocking DB work).

- Commands: the counter comes from ``cabinets.cmd_counter`` (one sequence per cabinet, bumped
  in the same transaction that stores the command), the signed bytes are stored with the
  command so a resend is byte-identical (the cabinet then sees a ``Duplicate``, not a replay).
- Configs: the counter is ``config_versions.counter``, one increasing sequence for the fleet;
  a config is a complete snapshot built from the catalogue (tariff), the signing key,
  revoked passes and ``cabinet_settings`` (fleet defaults ``*`` overridden per cabinet).
- Passes: recorded and paid for (holds placed) by ``RentalService.issue_pass``, and signed
  here only after that; Ed25519 signatures are deterministic, so the same pass always gives
  the same QR text. A revocation newer than a cabinet's config makes that config due again
  (``configs_behind_revocations``), so it reaches every cabinet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from cloud.alerts import insert_ignore
from cloud.db import cabinet_settings, cabinets, commands, config_versions, passes
from cloud.errors import CloudError
from cloud.merchants import CatalogError
from cloud.pricing import Tariff as CloudTariff
from cloud.rentals import EjectCommand, RentalService
from sync.amounts import format_money
from sync.commands import Command, CommandKind
from sync.config import Config, ConfigBody, Tariff
from sync.errors import ProtocolError
from sync.events import CommandStatus, EventType
from sync.passes import OfflinePass
from sync.signing import Signer


class CommandRefused(CloudError, ValueError):
    """A command cannot be made: unknown kind or bad arguments (the message says which)."""

    status = 400
    code = "command_refused"


class CabinetNotRegistered(CommandRefused):
    """A command names a cabinet the cloud does not know: register it first."""

    status = 404
    code = "command_refused"


@dataclass(frozen=True)
class SignedCommand:
    cmd_id: str
    cabinet: str
    counter: int
    kind: str
    payload: bytes
    expires_at: float


@dataclass(frozen=True)
class SignedConfig:
    cabinet: str
    counter: int
    expires_at: float
    payload: bytes
    body: ConfigBody


def apply_command_report(
    conn: Connection, cabinet: str, type_: str, body: Mapping[str, Any], now: float
) -> str | None:
    """A cabinet's ``command_received`` / ``command_result``, applied only from the command's cabinet.

    Returns None when applied (or the command is unknown: nothing to update), else the cabinet
    the command was sent to: a status from any other cabinet is never applied (issue 11.2).
    """
    cmd_id = body.get("cmd_id")
    sent_to = conn.execute(select(commands.c.cabinet_id).where(commands.c.cmd_id == cmd_id)).scalar()
    if sent_to is None:
        return None
    if sent_to != cabinet:
        return str(sent_to)
    set_command_status(conn, type_, body, now)
    return None


def set_command_status(conn: Connection, type_: str, body: Mapping[str, Any], now: float) -> None:
    """Move a command's status from a cabinet report (the caller checked who sent it)."""
    q = update(commands).where(commands.c.cmd_id == body.get("cmd_id"))
    if type_ == EventType.COMMAND_RECEIVED:
        conn.execute(
            q.where(commands.c.status.in_((CommandStatus.QUEUED, CommandStatus.SENT))).values(
                status=CommandStatus.RECEIVED
            )
        )
    elif type_ == EventType.COMMAND_RESULT:
        conn.execute(
            q.values(
                status=CommandStatus.OK if body.get("ok") else CommandStatus.FAILED,
                result=str(body.get("detail") or ""),
                finished_at=now,
            )
        )


def sync_tariff(t: CloudTariff, text: Mapping[str, str] | None = None) -> Tariff | None:
    """The cloud tariff as the cabinet shows it at the kiosk (None if the wire cannot say it)."""
    if t.period_minutes > 24 * 60:
        return None
    price = f"{format_money(t.price_per_period, t.currency)} / {t.period_minutes} min"  # never through floats
    return Tariff(
        currency=t.currency,
        unit_minutes=t.period_minutes,
        unit_price_minor=t.price_per_period,
        free_minutes=min(t.free_minutes, 24 * 60),
        daily_cap_minor=t.daily_cap,
        rental_cap_minor=t.total_cap,
        deposit_minor=t.hold,
        text=dict(text or {"en": price, "zh": price}),
    )


class Signatures:
    """Makes and stores signed commands, configs and passes."""

    def __init__(
        self, engine: Engine, rentals: RentalService, signer: Callable[[], Signer], clock: Callable[[], float]
    ) -> None:
        self.engine = engine
        self.rentals = rentals
        self._signer = signer
        self.clock = clock

    @property
    def signer(self) -> Signer:
        return self._signer()

    # --- commands --------------------------------------------------------------------------

    def new_command(self, cabinet: str, kind: str, args: Mapping[str, Any], ttl_s: float) -> SignedCommand:
        """Allocate the cabinet's next counter, sign, and store the command as ``queued``."""
        try:
            kind_ = CommandKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in CommandKind)
            raise CommandRefused(f"unknown command kind {kind!r} (one of {known})") from None
        now = self.clock()
        cmd_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            bumped = conn.execute(
                update(cabinets)
                .where(cabinets.c.id == cabinet)
                .values(cmd_counter=cabinets.c.cmd_counter + 1)
            ).rowcount
            if not bumped:
                raise CabinetNotRegistered(
                    f"unknown cabinet {cabinet}: register it first (POST /api/cabinets)"
                )
            counter = conn.execute(
                select(cabinets.c.cmd_counter).where(cabinets.c.id == cabinet)
            ).scalar_one()
            try:
                cmd = Command(cmd_id, cabinet, counter, now, now + ttl_s, kind_, dict(args))
            except ProtocolError as e:
                raise CommandRefused(f"{kind}: {e.reason}") from None
            payload = self.signer.sign(cmd)
            conn.execute(
                insert(commands).values(
                    cmd_id=cmd_id,
                    cabinet_id=cabinet,
                    counter=counter,
                    kind=kind_.value,
                    args=json.dumps(dict(cmd.args), default=str),
                    created_at=now,
                    expires_at=cmd.expires_at,
                    status=CommandStatus.QUEUED,
                    payload=payload,
                )
            )
        return SignedCommand(cmd_id, cabinet, counter, kind_.value, payload, cmd.expires_at)

    def sign_eject(self, ej: EjectCommand) -> SignedCommand:
        """Sign the eject that ``RentalService.start_app_rental`` stored (its counter is already taken)."""
        cmd = Command(
            ej.cmd_id, ej.cabinet, ej.counter, ej.issued_at, ej.expires_at, CommandKind.EJECT, ej.args
        )
        payload = self.signer.sign(cmd)
        with self.engine.begin() as conn:
            conn.execute(update(commands).where(commands.c.cmd_id == ej.cmd_id).values(payload=payload))
        return SignedCommand(ej.cmd_id, ej.cabinet, ej.counter, "eject", payload, ej.expires_at)

    def mark_sent(self, cmd_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(commands)
                .where(commands.c.cmd_id == cmd_id, commands.c.status == CommandStatus.QUEUED)
                .values(status=CommandStatus.SENT, sent_at=self.clock())
            )

    def unsent(self) -> list[SignedCommand]:
        """Signed commands not yet handed to the broker and not expired (sent again after a reconnect)."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(commands).where(
                    commands.c.status == CommandStatus.QUEUED,
                    commands.c.expires_at > now,
                    commands.c.payload.is_not(None),
                )
            ).mappings()
            return [
                SignedCommand(
                    r["cmd_id"], r["cabinet_id"], r["counter"], r["kind"], r["payload"], r["expires_at"]
                )
                for r in rows
            ]

    # --- config ----------------------------------------------------------------------------

    def settings(self, cabinet: str) -> dict[str, Any]:
        """The cabinet's settings: fleet defaults (``*``) overridden by the cabinet's own."""
        out: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for key in ("*", cabinet):
                row = conn.execute(
                    select(cabinet_settings).where(cabinet_settings.c.cabinet_id == key)
                ).first()
                if row is None:
                    continue
                for name in ("rentable_min_soc", "power_budget_w"):
                    if getattr(row, name) is not None:
                        out[name] = getattr(row, name)
                if row.battery_deny_list:
                    out["battery_deny_list"] = sorted(
                        set(out.get("battery_deny_list", [])) | set(json.loads(row.battery_deny_list))
                    )
        return out

    def set_settings(self, cabinet: str, **values: Any) -> None:
        """Store settings for a cabinet (or ``*``); None leaves a value as it was."""
        now = self.clock()
        with self.engine.begin() as conn:
            insert_ignore(conn, cabinet_settings, {"cabinet_id": cabinet, "updated_at": now})
            v = {k: x for k, x in values.items() if x is not None}
            if "battery_deny_list" in v:
                v["battery_deny_list"] = json.dumps(sorted(set(v["battery_deny_list"])))
            conn.execute(
                update(cabinet_settings)
                .where(cabinet_settings.c.cabinet_id == cabinet)
                .values(**v, updated_at=now)
            )

    def config_body(self, cabinet: str) -> ConfigBody:
        s = self.settings(cabinet)
        try:
            tariff = sync_tariff(self.rentals.catalog.pricing(cabinet).tariff)
        except CatalogError:
            tariff = None
        with self.engine.connect() as conn:
            revoked = conn.execute(
                select(passes.c.pass_id).where(
                    passes.c.revoked_at.is_not(None), passes.c.expires_at > self.clock()
                )
            ).scalars()
            revoked_ids = tuple(sorted(revoked))
        keys = self.signer.announcement(self.clock())  # current key, and the previous one in an overlap
        return ConfigBody(
            tariff=tariff,
            cloud_keys=keys.cloud_keys,
            key_not_after=keys.key_not_after,
            retired_keys=keys.retired_keys,
            revoked_passes=revoked_ids,
            battery_deny_list=tuple(s.get("battery_deny_list", ())),
            rentable_min_soc=s.get("rentable_min_soc"),
            power_budget_w=s.get("power_budget_w"),
        )

    def new_config(self, cabinet: str, ttl_s: float) -> SignedConfig:
        """A fresh signed snapshot for ``cabinet`` with the next fleet-wide counter."""
        body = self.config_body(cabinet)
        now = self.clock()
        with self.engine.begin() as conn:
            counter = conn.execute(
                insert(config_versions)
                .values(cabinet_id=cabinet, issued_at=now, expires_at=now + ttl_s, payload=b"")
                .returning(config_versions.c.counter)
            ).scalar_one()
            cfg = Config(cabinet, counter, now, now + ttl_s, body)
            payload = self.signer.sign(cfg)
            conn.execute(
                update(config_versions).where(config_versions.c.counter == counter).values(payload=payload)
            )
        return SignedConfig(cabinet, counter, cfg.expires_at, payload, body)

    def mark_config_published(self, counter: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(config_versions)
                .where(config_versions.c.counter == counter)
                .values(published_at=self.clock())
            )

    def latest_configs(self) -> list[tuple[str, bytes]]:
        """Each cabinet's newest published, unexpired config: what its retained ``cfg`` must hold."""
        now = self.clock()
        with self.engine.connect() as conn:
            newest = (
                select(config_versions.c.cabinet_id, func.max(config_versions.c.counter).label("counter"))
                .where(config_versions.c.published_at.is_not(None), config_versions.c.expires_at > now)
                .group_by(config_versions.c.cabinet_id)
                .subquery()
            )
            rows = conn.execute(
                select(config_versions.c.cabinet_id, config_versions.c.payload).join(
                    newest, config_versions.c.counter == newest.c.counter
                )
            ).all()
        return [(r.cabinet_id, r.payload) for r in rows]

    def configs_due(self, margin_s: float) -> list[str]:
        """Registered cabinets whose newest config is missing, unpublished, expires within ``margin_s``,
        or predates the last change of the signing key set (a rotation, the end of its overlap)."""
        now = self.clock()
        keys_changed = self.signer.keys_changed_at(now)
        with self.engine.connect() as conn:
            ids = conn.execute(select(cabinets.c.id)).scalars().all()
            due = []
            for cab in ids:
                newest = conn.execute(
                    select(config_versions)
                    .where(config_versions.c.cabinet_id == cab)
                    .order_by(config_versions.c.counter.desc())
                    .limit(1)
                ).first()
                if (
                    newest is None
                    or newest.published_at is None
                    or newest.expires_at - margin_s <= now
                    or newest.issued_at < keys_changed
                ):
                    due.append(cab)
        return due

    # --- passes ----------------------------------------------------------------------------

    def issue_pass(
        self, user_id: int, ttl_s: float, max_rentals: int = 1, currency: str | None = None
    ) -> tuple[OfflinePass, str]:
        """Record a pass, place its holds, then sign it; returns the pass and its QR text.

        Raises ``RentalRefused`` (no card, the card refused the holds) before anything is signed.
        """
        pass_id = "P-" + uuid.uuid4().hex[:16]
        now = self.clock()
        self.rentals.issue_pass(user_id, pass_id, now + ttl_s, max_rentals, currency)
        return self.pass_text(user_id, pass_id)

    def pass_text(self, user_id: int, pass_id: str) -> tuple[OfflinePass, str]:
        """The QR text of one of the user's passes (the same text each time); never of an unpaid one."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(passes).where(passes.c.pass_id == pass_id, passes.c.user_id == user_id)
            ).first()
        if row is None or row.hold_status in ("placing", "declined"):
            raise LookupError(f"no pass {pass_id} for this account")
        p = OfflinePass(row.pass_id, str(user_id), row.issued_at, row.expires_at, row.max_rentals)
        return p, self.signer.sign_pass(p)

    def configs_behind_revocations(self) -> list[str]:
        """Registered cabinets whose newest published config predates the newest pass revocation.

        Only unexpired revocations count (expired passes leave the config). The fleet link
        republishes these, so a revoked pass reaches every cabinet even after a crash between
        the revocation and the publish.
        """
        now = self.clock()
        with self.engine.connect() as conn:
            newest_revocation = conn.execute(
                select(func.max(passes.c.revoked_at)).where(
                    passes.c.revoked_at.is_not(None), passes.c.expires_at > now
                )
            ).scalar()
            if newest_revocation is None:
                return []
            rows = conn.execute(
                select(config_versions.c.cabinet_id, func.max(config_versions.c.issued_at))
                .where(config_versions.c.published_at.is_not(None))
                .group_by(config_versions.c.cabinet_id)
            ).all()
            published: dict[str, float] = {cab: at for cab, at in rows}
            ids = conn.execute(select(cabinets.c.id).order_by(cabinets.c.id)).scalars().all()
        return [c for c in ids if published.get(c, float("-inf")) < newest_revocation]
