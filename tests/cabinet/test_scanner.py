"""The kiosk's serial code reader, over a real pseudo-terminal: a scanned pass rents a battery,
a bad one is refused and announced for the kiosk screen."""

from __future__ import annotations

import asyncio
import os
import tty

from cabinet.scanner import Scanner


async def test_scanned_pass_rents_and_a_garbage_scan_is_refused_and_announced(rig, cloud_keys) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    announced: list[tuple[str, dict]] = []
    scanner = Scanner(
        os.ttyname(slave), 9600, rig.cab.passes, lambda kind, data: announced.append((kind, data))
    )
    await scanner.start()
    try:
        os.write(master, b"NOT-A-PASS\r\n")
        await rig.until(lambda: announced, what="the refusal to be announced")
        assert announced == [("scan_refused", {"reason": "pass_unreadable", "rental_id": ""})]

        os.write(master, cloud_keys.offline_pass("PASS-SCAN").encode() + b"\r\n")
        await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
        rig.simcab.take(1)
        started = await rig.until(lambda: rig.events("rental_started"), what="the rental")
        assert started[0].body["pass_id"] == "PASS-SCAN"
    finally:
        await scanner.stop()
        os.close(master)
        os.close(slave)
        await asyncio.sleep(0)


async def test_missing_reader_does_not_stop_the_cabinet(rig, tmp_path) -> None:
    scanner = Scanner(str(tmp_path / "no-such-tty"), 9600, rig.cab.passes)
    await scanner.start()  # logs and carries on
    await scanner.stop()
    assert rig.cab._health_problem() is None
