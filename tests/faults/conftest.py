"""Fixtures for the cabinet fault tests: a cabinet + simulator rig whose data directory can be
filled up or made read-only (a small tmpfs mounted for the test, when the machine allows it).

The rig itself is the tests' one (``make_rig`` in ``tests/rigs.py``); ``fault_rig`` puts it on
a given data directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.rigs import MakeRig, Rig


@dataclass
class SmallDisk:
    """A tmpfs of a few MB mounted for one test: the cabinet's SD card, which can fill up or go read-only."""

    path: Path

    def fill(self) -> Path:
        """Fill every free byte with a ballast file (what a runaway log would do); returns it."""
        ballast = self.path / "ballast"
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = 65536
            while size:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    size //= 2
        finally:
            os.close(fd)
        return ballast

    def give_back(self, ballast: Path, nbytes: int) -> None:
        """Shrink the ballast by ``nbytes`` (a little room again, e.g. below the rental reserve)."""
        os.truncate(ballast, max(0, ballast.stat().st_size - nbytes))

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def remount(self, mode: str) -> None:
        """``ro`` or ``rw``: what the kernel does to an SD card after I/O errors (errors=remount-ro)."""
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)


def _can_mount(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0  # fmt: skip
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 4 MB tmpfs (needs root and mount rights: skipped otherwise)."""
    if os.geteuid() != 0 or not _can_mount(tmp_path):
        pytest.skip("needs root with the right to mount a tmpfs (to fill a disk or make it read-only)")
    d = tmp_path / "sd"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(d)], check=True)
    try:
        yield SmallDisk(d)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["mount", "-o", "remount,rw", str(d)], check=False)
        subprocess.run(["umount", "-l", str(d)], check=False)


@dataclass
class Ext4Card:
    """A 16 MB ext4 image on a loop device, mounted with errors=remount-ro like a cabinet's SD card."""

    path: Path
    device: str

    def fail(self) -> None:
        """What the kernel does after an SD card I/O error: ext4 forces the mount read-only, under
        the open files (a plain ``mount -o remount,ro`` refuses while files are open for writing)."""
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("1")


@pytest.fixture
def ext4_card(tmp_path: Path) -> Iterator[Ext4Card]:
    """Needs root, loop devices, mkfs.ext4 and ext4's trigger_fs_error (Linux >= 5.x): skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a loop device")
    img, mnt = tmp_path / "sd.img", tmp_path / "sd"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], capture_output=True)
    if made.returncode or subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(img), str(mnt)],
                                         capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot make and loop-mount an ext4 image here")
    try:
        source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        device = Path(source).name
        if not Path(f"/sys/fs/ext4/{device}/trigger_fs_error").exists():
            pytest.skip("this kernel has no ext4 trigger_fs_error")
        yield Ext4Card(mnt, device)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def fault_rig(make_rig: MakeRig) -> Callable[..., Awaitable[Rig]]:
    """``await fault_rig(data_dir, sim_speed, **config overrides)``: the standard rig (simulator with 8 slots,
    packs in 1, 2, 3, 5, and a cabinet trusting ``cloud_keys``), on ``data_dir`` when given."""

    async def make(data_dir: Path | None = None, sim_speed: float = 1.0, **over: Any) -> Rig:
        return await make_rig(data_dir=data_dir, speed=sim_speed, **over)

    return make
