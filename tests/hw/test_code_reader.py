"""CodeReader over a real pty: the test writes as the scanner would, the reader yields codes."""

from __future__ import annotations

import asyncio
import os
import tty

from hw_fixtures import eventually

from drivers.code_reader import CodeReader


async def test_codes_arrive_line_by_line_and_garbage_is_dropped() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        async with CodeReader(os.ttyname(slave), max_line=64) as reader:
            os.write(master, b"\x00\xff\xfe\r\nPASS:abc123")  # noise at power-up, then a code in two writes
            os.write(master, b"\r\n\r\nhttps://x.example/p?q=1\n")
            os.write(master, b"bad\x07bell\n" + b"A" * 100 + b"\n" + b"last\r")
            got = [await asyncio.wait_for(reader.read(), 2) for _ in range(3)]
            assert got == ["PASS:abc123", "https://x.example/p?q=1", "last"]
            assert reader.stats.codes == 3
            assert reader.stats.rejected == 3  # undecodable, control char, overlong
            assert reader.stats.overflows == 1
    finally:
        os.close(master)
        os.close(slave)


async def test_iteration_ends_when_the_reader_closes() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        reader = CodeReader(os.ttyname(slave))
        await reader.start()
        os.write(master, b"ONE\n")

        async def collect() -> list[str]:
            return [code async for code in reader]

        task = asyncio.create_task(collect())
        await eventually(lambda: reader.stats.codes == 1, within=2)
        await reader.close()
        assert await asyncio.wait_for(task, 2) == ["ONE"]
    finally:
        os.close(master)
        os.close(slave)
