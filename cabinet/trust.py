"""What the cabinet trusts: cloud keys, revoked passes, denied batteries, from config and signed config.

The bootstrap keys come from the cabinet's config file (provisioning); every later change
arrives as signed config (topic ``cfg``), verified, applied, kept on disk (so a restart
without network still knows it) and recorded as ``config_applied``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2

from cabinet.ledger import Ledger
from sync.config import Config as SignedConfig
from sync.signing import ReplayState, Verifier, keyring_from_b64

log = logging.getLogger(__name__)


class LedgerReplayStore:
    """sync's ReplayStore on the ledger's replay_guard table, used on the ledger's writer thread.

    Writes join the caller's transaction, so accepting a counter and recording the command
    commit together (or not at all).
    """

    PREFIX = "sync:"

    def __init__(self, ledger: Ledger) -> None:
        self.conn: sqlite3.Connection = ledger.conn

    def get(self, stream: str) -> ReplayState | None:
        row = self.conn.execute(
            "SELECT window FROM replay_guard WHERE key = ?", (self.PREFIX + stream,)
        ).fetchone()
        return ReplayState.from_dict(cbor2.loads(row[0])) if row else None

    def put(self, stream: str, state: ReplayState) -> None:
        self.conn.execute(
            "INSERT INTO replay_guard (key, high, window, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET high = excluded.high, window = excluded.window,"
            " updated_at = excluded.updated_at",
            (self.PREFIX + stream, state.hwm, cbor2.dumps(state.to_dict(), canonical=True), time.time()),
        )


class Trust:
    """Keys, revocations and deny list in force on this cabinet."""

    def __init__(
        self,
        cabinet_id: str,
        bootstrap_keys: list[str],
        state_dir: Path,
        skew_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cabinet_id = cabinet_id
        self.skew_s = skew_s
        self.clock = clock
        self.path = state_dir / "signed-config.cbor"
        keys = {}
        for item in bootstrap_keys:
            key_id, sep, b64 = item.partition(":")
            if not sep:
                raise ValueError(f"sync.cloud_keys entry {item!r} must be 'keyid:base64'")
            keys[key_id] = b64
        self.keyring = keyring_from_b64(keys)
        self.config: SignedConfig | None = None

    @property
    def revoked(self) -> frozenset[str]:
        return frozenset(self.config.body.revoked_passes) if self.config else frozenset()

    @property
    def denied(self) -> frozenset[str]:
        return frozenset(self.config.body.battery_deny_list) if self.config else frozenset()

    def verifier(self, ledger: Ledger | None = None) -> Verifier:
        """A verifier over the current keys; with ``ledger``, replay state lives in it."""
        from sync.signing import MemoryReplayStore

        store: Any = LedgerReplayStore(ledger) if ledger is not None else MemoryReplayStore()
        return Verifier(self.keyring, self.cabinet_id, store, clock=self.clock, skew_s=self.skew_s)

    def adopt(self, config: SignedConfig, raw: bytes) -> None:
        """Take a verified signed config into force and keep its bytes for the next start."""
        self.config = config
        body = config.body
        if body.cloud_keys:
            self.keyring = keyring_from_b64(dict(body.cloud_keys))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load_saved(self) -> None:
        """Re-read the signed config kept from the last run (signature checked again, no replay check)."""
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        try:
            config = self.verifier().open(raw, SignedConfig)
        except Exception as e:
            log.error("kept signed config %s is not valid any more (%s); using bootstrap keys", self.path, e)
            return
        self.config = config
        if config.body.cloud_keys:
            self.keyring = keyring_from_b64(dict(config.body.cloud_keys))
