"""What the cabinet trusts: cloud keys, revoked passes, denied batteries, from config and signed config.

The bootstrap keys come from the cabinet's config file (provisioning) and are the root of a
chain of trust: every later key set arrives in a signed config (topic ``cfg``) that must be
signed by a key the cabinet trusts at that moment. The current key set (with each key's
overlap deadline and every key ever retired) and the config that set it are kept in
``trust-state.json``, written atomically inside the ledger transaction that accepts the
config, so a restart resumes from the chain, never from the bootstrap keys again: a retired
key stays retired, a rotated-in key stays trusted. A key leaves the set for good when a config
retires it, drops it, or its overlap deadline (``key_not_after``) passes.

After a restart a kept config past its expiry is not applied (tariff, settings), but its
revocations and deny list still narrow what the cabinet accepts (they can only refuse more).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from cabinet.ledger import Ledger
from sync.config import Config as SignedConfig
from sync.config import ConfigBody
from sync.errors import SecurityRejection
from sync.signing import MemoryReplayStore, ReplayState, SignedEnvelope, Verifier, keyring_from_b64

log = logging.getLogger(__name__)

TRUST_FILE = "trust-state.json"
LEGACY_CONFIG_FILE = "signed-config.cbor"  # before the chain was kept: the config alone


class BrokenChain(SecurityRejection):
    """A signed config that would leave the cabinet with no trusted key (refused, keys unchanged)."""


class TrustStateError(ValueError):
    """``trust-state.json`` is unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class KeySet:
    """The cloud keys this cabinet trusts, and every key it will never trust again.

    ``keys``: key id -> public key (unpadded base64url); ``not_after``: the end of a key's
    overlap window (absent: no end); ``retired_ids`` / ``retired_pubs``: what left the set,
    by id and by public key, so a retired key cannot come back under another id.
    ``counter`` is the config that made this set (0: the bootstrap keys).
    """

    keys: dict[str, str]
    not_after: dict[str, float] = field(default_factory=dict)
    retired_ids: frozenset[str] = frozenset()
    retired_pubs: frozenset[str] = frozenset()
    counter: int = 0

    def keyring(self) -> dict[str, Any]:
        return keyring_from_b64(self.keys)

    def retire(self, kids: set[str], why: str) -> KeySet:
        """This set without ``kids``, which are never trusted again."""
        if not kids & set(self.keys):
            return self
        log.warning("trust: keys %s retired (%s)", sorted(kids & set(self.keys)), why)
        return KeySet(
            {k: v for k, v in self.keys.items() if k not in kids},
            {k: v for k, v in self.not_after.items() if k not in kids},
            self.retired_ids | (kids & set(self.keys)),
            self.retired_pubs | {v for k, v in self.keys.items() if k in kids},
            self.counter,
        )

    def expire(self, now: float, skew_s: float) -> KeySet:
        """Keys whose overlap window ended (beyond the allowed skew) retired."""
        done = {k for k, t in self.not_after.items() if now > t + skew_s}
        return self.retire(done, "overlap window over") if done else self

    def successor(self, body: ConfigBody, counter: int, now: float, skew_s: float) -> KeySet:
        """The set a verified config announces, minus everything ever retired.

        A config without ``cloud_keys`` keeps the current keys. A key dropped from the set,
        listed in ``retired_keys`` or past its ``key_not_after`` is retired for good.
        """
        offered = dict(body.cloud_keys) if body.cloud_keys else dict(self.keys)
        not_after = dict(body.key_not_after) if body.cloud_keys else dict(self.not_after)
        retired_ids = set(self.retired_ids) | set(body.retired_keys)
        retired_pubs = set(self.retired_pubs)
        for kid, pub in self.keys.items():
            if kid not in offered:  # left the set: retired for good
                retired_ids.add(kid)
                retired_pubs.add(pub)
            elif offered[kid] != pub:  # the id now names another key: the old key is gone
                retired_pubs.add(pub)
        refused = {k for k, v in offered.items() if k in retired_ids or v in retired_pubs}
        if refused:
            log.warning(
                "trust: cfg %d offers retired keys %s again; they stay retired", counter, sorted(refused)
            )
        keys = {k: v for k, v in offered.items() if k not in refused}
        new = KeySet(
            keys,
            {k: t for k, t in not_after.items() if k in keys},
            frozenset(retired_ids),
            frozenset(retired_pubs),
            counter,
        ).expire(now, skew_s)
        if not new.keys:
            raise BrokenChain(
                f"cfg {counter}: would leave no trusted key (offered {sorted(offered)}); keys kept"
            )
        return new

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "not_after": self.not_after,
            "retired_ids": sorted(self.retired_ids),
            "retired_pubs": sorted(self.retired_pubs),
            "counter": self.counter,
        }

    @classmethod
    def from_json(cls, d: Any) -> KeySet:
        ks = cls(
            {str(k): str(v) for k, v in d["keys"].items()},
            {str(k): float(v) for k, v in d.get("not_after", {}).items()},
            frozenset(map(str, d.get("retired_ids", ()))),
            frozenset(map(str, d.get("retired_pubs", ()))),
            int(d.get("counter", 0)),
        )
        ks.keyring()  # every key must parse
        if not ks.keys:
            raise ValueError("no trusted key")
        return ks


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: whole old or whole new file after a power cut."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


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
    """Keys, revocations and deny list in force on this cabinet (see the module doc)."""

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
        self.path = Path(state_dir) / TRUST_FILE
        self.legacy_path = Path(state_dir) / LEGACY_CONFIG_FILE
        keys = {}
        for item in bootstrap_keys:
            key_id, sep, b64 = item.partition(":")
            if not sep:
                raise ValueError(f"sync.cloud_keys entry {item!r} must be 'keyid:base64'")
            keys[key_id] = b64
        keyring_from_b64(keys)  # refuse a bad bootstrap line at start
        self.bootstrap = KeySet(keys)
        self.keys = self.bootstrap
        self.config: SignedConfig | None = None
        self._kept_revoked: frozenset[str] = frozenset()  # of a kept config past its expiry
        self._kept_denied: frozenset[str] = frozenset()

    @property
    def keyring(self) -> dict[str, Any]:
        """The public keys signed messages are checked against now."""
        return self.keys.keyring()

    @property
    def revoked(self) -> frozenset[str]:
        return frozenset(self.config.body.revoked_passes) if self.config else self._kept_revoked

    @property
    def denied(self) -> frozenset[str]:
        return frozenset(self.config.body.battery_deny_list) if self.config else self._kept_denied

    def verifier(self, ledger: Ledger | None = None) -> Verifier:
        """A verifier over the current keys; with ``ledger``, replay state lives in it."""
        store: Any = LedgerReplayStore(ledger) if ledger is not None else MemoryReplayStore()
        keys = self.keys
        return Verifier(
            keys.keyring(),
            self.cabinet_id,
            store,
            clock=self.clock,
            skew_s=self.skew_s,
            key_not_after=keys.not_after,
        )

    def accept(self, ledger: Ledger, payload: bytes) -> tuple[SignedConfig, KeySet]:
        """Verify a config and keep it with the key set it announces; call inside ``ledger.atomic()``.

        The state file is written before the transaction commits, so it is never behind the
        ledger's config counter (a crash in between makes the retained config acceptable again).
        """
        verifier = self.verifier(ledger)
        config = verifier.verify_config(payload)
        keys = self.keys.successor(config.body, config.counter, verifier.key_now(), self.skew_s)
        self._save(keys, payload)
        return config, keys

    def adopt(self, config: SignedConfig, keys: KeySet) -> None:
        """Take an accepted config and its key set into force (after the ledger committed it)."""
        self.keys = keys
        self.config = config

    def _save(self, keys: KeySet, raw: bytes) -> None:
        signer = SignedEnvelope.decode(raw).key_id
        state = {
            "v": 1,
            "cabinet": self.cabinet_id,
            "keyset": keys.to_json(),
            # the key that signed the config, as trusted when it was accepted (to re-check it)
            "config_signer": {signer: self.keys.keys.get(signer, keys.keys.get(signer, ""))},
            "config": base64.b64encode(raw).decode(),
        }
        _write_atomically(self.path, json.dumps(state, sort_keys=True).encode())

    def load_saved(self) -> None:
        """Resume the chain of trust kept from the last run, and its config if it has not expired."""
        if not self.path.exists():
            self._load_legacy()
            return
        try:
            state = json.loads(self.path.read_text())
            if state.get("cabinet") != self.cabinet_id:
                raise ValueError(f"kept for cabinet {state.get('cabinet')!r}")
            keys = KeySet.from_json(state["keyset"])
            raw = base64.b64decode(state["config"])
            signer = {str(k): str(v) for k, v in state["config_signer"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # never silently fall back to keys that may have been retired: stay on the bootstrap
            # keys and say so loudly (the next signed config from a bootstrap key repairs it)
            log.critical(
                "trust: %s unreadable (%s); using the bootstrap keys of the config file", self.path, e
            )
            return
        self.keys = keys.expire(self.clock(), self.skew_s)
        try:
            config = Verifier(keyring_from_b64(signer), self.cabinet_id, MemoryReplayStore()).open(
                raw, SignedConfig
            )
        except Exception as e:
            log.error("trust: config kept in %s does not verify (%s); not applied", self.path, e)
            return
        self._take_kept(config)

    def _take_kept(self, config: SignedConfig) -> None:
        now = max(self.clock(), config.issued_at)
        if now > config.expires_at + self.skew_s:
            log.warning(
                "trust: kept config %d expired at %.0f; its settings are not applied, its revocations are",
                config.counter,
                config.expires_at,
            )
            self._kept_revoked = frozenset(config.body.revoked_passes)
            self._kept_denied = frozenset(config.body.battery_deny_list)
            return
        self.config = config

    def _load_legacy(self) -> None:
        """A cabinet upgraded from before the chain: its kept config, checked with the bootstrap keys."""
        if not self.legacy_path.exists():
            return
        raw = self.legacy_path.read_bytes()
        try:
            config = self.verifier().open(raw, SignedConfig)
            keys = self.bootstrap.successor(config.body, config.counter, self.clock(), self.skew_s)
            self._save(keys, raw)
        except Exception as e:
            log.error("trust: kept config %s is not valid (%s); using bootstrap keys", self.legacy_path, e)
            return
        self.keys = keys
        self._take_kept(config)
