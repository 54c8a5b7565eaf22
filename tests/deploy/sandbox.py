"""Run a command under the seccomp rules that cabinet.service asks systemd for.

There is no systemd (PID 1) in the test machine, so ``systemd-run -p ...`` cannot apply the
unit's sandbox. The two settings that can break a Python program from the inside are
``SystemCallFilter=`` and ``MemoryDenyWriteExecute=``; both are plain seccomp filters, so this
launcher builds the same filters with libseccomp (the library systemd itself uses) and then
``execv``s the command under them:

- the allow list: every system call of the unit's ``SystemCallFilter=`` groups, expanded with
  ``systemd-analyze syscall-filter`` (the same tables systemd compiles in), minus the ``~``
  groups; anything else fails with EPERM (``SystemCallErrorNumber=EPERM``);
- MemoryDenyWriteExecute, as systemd 252 implements it (src/shared/seccomp-util.c):
  ``mmap`` with PROT_WRITE|PROT_EXEC, ``mprotect``/``pkey_mprotect`` adding PROT_EXEC, and
  ``shmat`` with SHM_EXEC fail with EPERM.

Usage: ``python sandbox.py UNIT_FILE -- COMMAND ARGS...``
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE = 0x2
PROT_EXEC = 0x4
SHM_EXEC = 0o100000


def scmp_act_errno(code: int) -> int:
    """libseccomp's SCMP_ACT_ERRNO(code) macro."""
    return 0x00050000 | (code & 0xFFFF)


class ScmpArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp from seccomp.h."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ScmpArgCmp),
    )
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    return lib


def syscall_groups() -> dict[str, list[str]]:
    """Every ``@group`` systemd knows, with its members (names and nested groups)."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    """System call names in ``items``, with ``@groups`` expanded recursively."""
    names: set[str] = set()
    for item in items:
        if item.startswith("@"):
            if item not in groups:
                raise ValueError(f"unknown system call group {item}")
            names |= expand(groups[item], groups)
        else:
            names.add(item)
    return names


def unit_syscall_filter(unit: Path) -> tuple[list[str], list[str], bool]:
    """The unit's SystemCallFilter allow and deny items, and whether MemoryDenyWriteExecute is on."""
    allow: list[str] = []
    deny: list[str] = []
    mdwe = False
    for line in unit.read_text().splitlines():
        m = re.match(r"\s*SystemCallFilter\s*=\s*(.*)$", line)
        if m:
            value = m.group(1).strip()
            if value.startswith("~"):
                deny += value[1:].split()
            else:
                allow += value.split()
        m = re.match(r"\s*MemoryDenyWriteExecute\s*=\s*(\S+)", line)
        if m:
            mdwe = m.group(1).lower() in ("yes", "true", "1", "on")
    if not allow:
        raise ValueError(f"{unit}: no SystemCallFilter= allow list")
    return allow, deny, mdwe


def _rule(lib: ctypes.CDLL, ctx: int, action: int, name: str, *cmps: ScmpArgCmp) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr == -1:  # not a system call libseccomp knows at all
        return
    arr = (ScmpArgCmp * len(cmps))(*cmps) if cmps else None
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    # -EDOM/-EINVAL: a system call that does not exist on this architecture (systemd skips those too).
    if rc < 0 and -rc not in (errno.EDOM, errno.EINVAL, errno.EFAULT):
        raise OSError(-rc, f"seccomp_rule_add({name})")


def install(unit: Path) -> tuple[int, bool]:
    """Load the unit's filters into this process; returns (allowed system calls, MDWE on)."""
    allow_items, deny_items, mdwe = unit_syscall_filter(unit)
    groups = syscall_groups()
    allowed = expand(allow_items, groups) - expand(deny_items, groups)
    lib = _libseccomp()
    eperm = scmp_act_errno(errno.EPERM)

    # MemoryDenyWriteExecute first: once the allow list is loaded, seccomp() itself is denied.
    if mdwe:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        wx = PROT_WRITE | PROT_EXEC
        _rule(lib, ctx, eperm, "mmap", ScmpArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx))
        for name in ("mprotect", "pkey_mprotect"):
            _rule(lib, ctx, eperm, name, ScmpArgCmp(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        _rule(lib, ctx, eperm, "shmat", ScmpArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        if lib.seccomp_load(ctx) != 0:
            raise OSError("seccomp_load(MemoryDenyWriteExecute) failed")
        lib.seccomp_release(ctx)
    ctx = lib.seccomp_init(eperm)
    for name in sorted(allowed):
        _rule(lib, ctx, SCMP_ACT_ALLOW, name)
    if lib.seccomp_load(ctx) != 0:
        raise OSError("seccomp_load(allow list) failed")
    lib.seccomp_release(ctx)

    return len(allowed), mdwe


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    install(Path(argv[0]))
    os.execv(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
