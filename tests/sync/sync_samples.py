"""Valid sample messages of every kind, for the sync tests."""

from __future__ import annotations

from sync.commands import Command, CommandKind
from sync.config import Config, ConfigBody, ModelManifest, Tariff
from sync.messages import Ack, EventBatch, SlotSample, State, Telemetry, WireEvent
from sync.passes import OfflinePass

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CAB = "CAB-0001"


def events(n: int, first: int = 1, cabinet_boot: str = "4f1c2d3e-boot") -> tuple[WireEvent, ...]:
    return tuple(
        WireEvent(
            seq=s,
            id=f"{CAB}-{s}",
            type="rental.started" if s % 2 else "return.accepted",
            at_wall=T0 + s * 37.5,
            at_mono=1000.0 + s * 37.5,
            boot_id=cabinet_boot,
            body={
                "slot": s % 24 + 1,
                "battery": f"BAT{s % 97:05d}",
                "rental_id": f"R-{s:08d}",
                "user": "u-42",
            },
        )
        for s in range(first, first + n)
    )


def batch(n: int = 3, first: int = 1) -> EventBatch:
    return EventBatch(CAB, events(n, first))


def manifest() -> ModelManifest:
    return ModelManifest(
        "2026.01.3", "ab" * 32, "https://models.example/fault-2026.01.3.onnx", 48_213, "1.20"
    )


def command(kind: CommandKind = CommandKind.EJECT, counter: int = 1, **over: object) -> Command:
    args = {
        CommandKind.EJECT: {"rental_id": "R-00000042", "user": "u-42"},
        CommandKind.UNLOCK: {"slot": 4, "reason": "stuck pack", "technician": "tech-7"},
        CommandKind.QUARANTINE_SLOT: {"slot": 4, "reason": "hot"},
        CommandKind.RELEASE_SLOT: {"slot": 4},
        CommandKind.RESTART: {},
        CommandKind.REBOOT: {"reason": "kernel update"},
        CommandKind.SET_CONFIG: {"settings": {"kiosk.brightness": 80}},
        CommandKind.PING: {"nonce": "n-1"},
        CommandKind.MODEL_UPDATE: {"manifest": manifest().to_wire()},
    }.get(kind, {})
    fields: dict = dict(
        cmd_id=f"cmd-{counter}",
        cabinet=CAB,
        counter=counter,
        issued_at=T0,
        expires_at=T0 + 60,
        kind=kind,
        args=args,
    )
    fields.update(over)
    return Command(**fields)


def config(counter: int = 1, cabinet: str = CAB, cloud_keys: dict | None = None, **body: object) -> Config:
    b = dict(
        tariff=Tariff(
            "CNY",
            unit_minutes=30,
            unit_price_minor=150,
            free_minutes=3,
            daily_cap_minor=3000,
            text={"zh": "每30分钟1.5元", "en": "1.5 CNY per 30 min"},
        ),
        cloud_keys=cloud_keys or {},
        revoked_passes=("P-9",),
        battery_deny_list=("BAT00013",),
        rentable_min_soc=60,
        power_budget_w=400,
    )
    b.update(body)
    return Config(cabinet, counter, T0, T0 + 30 * 86400, ConfigBody(**b))


def offline_pass(pass_id: str = "P-1") -> OfflinePass:
    return OfflinePass(pass_id, "u-42", T0, T0 + 7 * 86400, max_rentals=2)


def telemetry(n: int = 24) -> Telemetry:
    return Telemetry(
        CAB,
        T0,
        (
            *(SlotSample(i, T0, f"BAT{i:05d}", 80, 4100, 1500, 312, 0) for i in range(1, n + 1)),
            SlotSample(n + 1, T0),
        ),
    )


def state() -> State:
    return State(CAB, True, T0, {"cabinet": "0.1.0", "model": "2026.01.3"}, {"slots": 24, "batteries": 20}, 7)


def all_unsigned() -> list:
    return [batch(1), batch(200), Ack(CAB, 17), telemetry(), telemetry(0), state()]


def all_signable() -> list:
    return [*(command(k) for k in CommandKind), config(), config(cabinet="*"), offline_pass()]
