"""Run every benchmark in bench/ (modules named ``bench_*.py``) one after another.

Usage: ``./dev bench [--quick] [NAME ...]`` (NAME without the ``bench_`` prefix). Each benchmark
prints its own numbers and writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter runs (smoke check of the benchmarks)")
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = ap.parse_args(argv)
    found = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    wanted = [f"bench_{n.removeprefix('bench_')}" for n in args.names] or found
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        ap.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(found)})")
    failed = []
    for name in wanted:
        print(f"=== {name} ===", flush=True)
        t0 = time.monotonic()
        mod = importlib.import_module(f"bench.{name}")
        rc = mod.main(["--quick"] if args.quick else [])
        print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.1f} s ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
