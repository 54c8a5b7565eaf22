"""Run as a subprocess by test_ledger_crash.py: rents and returns batteries forever, printing
``seq id`` after each record() returns (= acknowledged), until it is SIGKILLed."""

from __future__ import annotations

import random
import sys

from cabinet.ledger import Ledger

SLOTS = 6


def main(path: str, cabinet: str, seed: int) -> None:
    rng = random.Random(seed)
    lg = Ledger.open(path, cabinet)
    ack = sys.stdout
    if not lg.batteries():
        for slot in range(1, SLOTS - 1):
            ev = lg.record("battery_seen", slot=slot, sn=f"PB{slot:06d}", soc=90.0, cycles=0)
            ack.write(f"{ev.seq} {ev.id}\n")
            ack.flush()
    n = lg.last_seq
    while True:
        n += 1
        full = [s for s in lg.slots() if s.sn]
        empty = [s.slot for s in lg.slots() if not s.sn] + [SLOTS]
        out = lg.open_rentals()
        if full and (not out or rng.random() < 0.5):
            s = rng.choice(full)
            rid = f"R{seed}-{n}"
            lg.record("command_received", cmd_id=f"c{rid}", kind="eject", args={"rental_id": rid})
            ev = lg.record(
                "rental_started", rental_id=rid, sn=s.sn, slot=s.slot, source="cloud", cmd_id=f"c{rid}"
            )
        else:
            r = rng.choice(out)
            free = [e for e in empty if lg.slot(e) is None or lg.slot(e).sn is None]
            ev = lg.record(
                "battery_returned", slot=rng.choice(free), sn=r.sn, rental_id=r.rental_id, soc=50.0
            )
        ack.write(f"{ev.seq} {ev.id}\n")
        ack.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
