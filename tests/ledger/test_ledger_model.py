"""Property test: the ledger's rules and projections against a small model of the cabinet."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cabinet.ledger import Ledger, LedgerRuleError, verify_db

SLOTS = st.integers(min_value=1, max_value=4)
SNS = st.sampled_from(["A", "B", "C", "D", "E"])
RIDS = st.sampled_from(["R1", "R2", "R3", "R4", "R5"])


class CabinetModel(RuleBasedStateMachine):
    """Model: where each battery is and which rentals are open; the ledger must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.lg = Ledger.in_memory("cab-model")
        self.slots: dict[int, str] = {}
        self.place: dict[
            str, tuple[str, object]
        ] = {}  # sn -> ("slot", n) | ("rental", rid) | ("gone", reason)
        self.rentals: dict[str, str] = {}  # rid -> "open" | "returned" | "closed"
        self.rental_sn: dict[str, str] = {}

    def attempt(self, valid: bool, type_: str, **body: object) -> bool:
        before = self.lg.last_seq
        try:
            self.lg.record(type_, **body)
        except LedgerRuleError:
            assert not valid, f"{type_} {body} refused but the model allows it"
            assert self.lg.last_seq == before
            return False
        assert valid, f"{type_} {body} accepted but the model forbids it"
        assert self.lg.last_seq == before + 1
        return True

    @rule(slot=SLOTS, sn=SNS)
    def battery_seen(self, slot: int, sn: str) -> None:
        valid = slot not in self.slots and self.place.get(sn, ("gone",))[0] == "gone"
        if self.attempt(valid, "battery_seen", slot=slot, sn=sn):
            self.slots[slot], self.place[sn] = sn, ("slot", slot)

    @rule(rid=RIDS, slot=SLOTS, sn=SNS)
    def rental_started(self, rid: str, slot: int, sn: str) -> None:
        valid = rid not in self.rentals and self.slots.get(slot) == sn
        if self.attempt(valid, "rental_started", rental_id=rid, sn=sn, slot=slot, source="cloud"):
            del self.slots[slot]
            self.place[sn], self.rentals[rid], self.rental_sn[rid] = ("rental", rid), "open", sn

    @rule(slot=SLOTS, sn=SNS, rid=st.none() | RIDS)
    def battery_returned(self, slot: int, sn: str, rid: str | None) -> None:
        where = self.place.get(sn, ("unknown", None))
        local = where[1] if where[0] == "rental" else None
        valid = slot not in self.slots and where[0] != "slot"
        if rid is not None:
            valid = valid and self.rentals.get(rid, "open") == "open"
            valid = valid and self.rental_sn.get(rid, sn) == sn and local in (None, rid)
        if self.attempt(valid, "battery_returned", slot=slot, sn=sn, rental_id=rid):
            if local is not None:
                self.rentals[str(local)] = "returned"
            self.slots[slot], self.place[sn] = sn, ("slot", slot)

    @rule(slot=SLOTS, sn=SNS)
    def battery_removed_unexpected(self, slot: int, sn: str) -> None:
        if self.attempt(self.slots.get(slot) == sn, "battery_removed_unexpected", slot=slot, sn=sn):
            del self.slots[slot]
            self.place[sn] = ("gone", "missing")

    @rule(sn=SNS, reason=st.sampled_from(["repair", "lost", "sold"]))
    def battery_gone(self, sn: str, reason: str) -> None:
        where = self.place.get(sn)
        if self.attempt(where is not None and where[0] != "gone", "battery_gone", sn=sn, reason=reason):
            assert where is not None
            if where[0] == "slot":
                del self.slots[int(where[1])]  # type: ignore[call-overload]
            else:
                self.rentals[str(where[1])] = "closed"
            self.place[sn] = ("gone", reason)

    @invariant()
    def ledger_agrees_with_model(self) -> None:
        assert {s.slot: s.sn for s in self.lg.slots() if s.sn} == self.slots
        got = {
            b.sn: (
                b.place,
                b.slot if b.place == "slot" else b.rental_id if b.place == "rental" else b.gone_reason,
            )
            for b in self.lg.batteries()
        }
        assert got == self.place
        assert {r: self.lg.rental(r).state for r in self.rentals} == self.rentals
        assert sorted(r.rental_id for r in self.lg.open_rentals()) == sorted(
            r for r, s in self.rentals.items() if s == "open"
        )

    def teardown(self) -> None:
        report = verify_db(self.lg.conn)
        assert report.ok, report.summary()
        self.lg.close()


CabinetModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_ledger_follows_the_cabinet_model = CabinetModel.TestCase
