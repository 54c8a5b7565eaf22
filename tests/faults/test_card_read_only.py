"""The SD card goes read-only under the running cabinet (ext4 errors=remount-ro after an I/O error).

Renting is refused with a clear reason (``storage_unwritable``, never "ledger corrupt": the file
is sound, the card refuses writes), no lock is pulsed, nothing is half-written, and the cabinet
keeps scanning (telemetry is dropped, not fatal). A kernel-forced read-only ext4 cannot be made
writable again without unmounting (fsck, usually a reboot), so recovery is the restart; the
disk-full tests show the in-place recovery once writes work again.
"""

from __future__ import annotations

import asyncio

from cabinet.ledger import verify


async def test_card_forced_read_only_refuses_renting_clearly_and_keeps_the_ledger_sound(
    fault_rig, ext4_card, cloud_keys
) -> None:
    rig = await fault_rig(ext4_card.path)
    seq = await rig.ledger.run(lambda lg: lg.last_seq)
    ext4_card.fail()

    out = await rig.cab.passes.submit(cloud_keys.offline_pass("P-ro"))
    assert (out.status, out.reason) == ("refused", "storage_unwritable")
    assert not any(s.presented for s in rig.simcab.slots)
    assert rig.cab.ledger_problem is None  # not taken for a corrupt ledger

    scans = rig.cab.bus.stats()["scans"]
    await rig.until(lambda: rig.cab.bus.stats()["scans"] >= scans + 10, what="the poller to keep scanning")
    assert rig.cab._health_problem() is None
    assert await rig.ledger.run(lambda lg: lg.last_seq) == seq  # nothing written, nothing half-written
    report = await asyncio.to_thread(verify, rig.data_dir / "ledger.db")
    assert report.ok, report.summary()
