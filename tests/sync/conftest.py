"""Fixtures for the sync tests.

pytest (rootdir conftest, no ``tests/__init__.py``) puts ``tests/`` on ``sys.path``, where the
folder ``tests/sync`` would shadow the real ``sync`` package as an empty namespace package.
Putting the repository root first makes ``import sync`` find the real one (a regular package
wins over namespace portions). The lasting fix is ``pythonpath = .`` in setup.cfg's pytest
section; until then this keeps the sync tests correct on their own.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
