"""Fault model updates from the cloud: signed manifest, chunks over MQTT, verify, swap, roll back.

The ``model_update`` command carries a signed manifest (version, size, SHA-256). Chunks arrive on
the ``model`` topic; once the file is complete and matches the manifest it is written beside the
current model, loaded and smoke-tested, and only then made current. A file that fails any step is
discarded and the running model stays; the previous model is kept for a roll back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from sync.commands import Command
from sync.model_transfer import MQTT_URL_PREFIX, Assembly, ModelChunk

log = logging.getLogger(__name__)


class ModelStore:
    """The models kept on the cabinet: ``current`` and ``previous`` file names in ``state.json``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "state.json"

    def state(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def current(self) -> Path | None:
        name = self.state().get("current")
        return self.dir / name if name and (self.dir / name).exists() else None

    def write(self, version: str, blob: bytes) -> Path:
        """Store a verified file durably under its version's name."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in version)
        path = self.dir / f"model-{safe}.onnx"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def make_current(self, path: Path) -> None:
        old = self.state().get("current")
        state = {"current": path.name, **({"previous": old} if old and old != path.name else {})}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)


class ModelUpdater:
    """Applies ``model_update`` commands; chunks are fed in by the sync agent."""

    def __init__(self, store: ModelStore, health: Any, timeout_s: float = 300.0) -> None:
        self.store = store
        self.health = health
        self.timeout_s = timeout_s
        self._assembly: Assembly | None = None
        self._complete = asyncio.Event()

    def on_chunk(self, chunk: ModelChunk) -> None:
        if self._assembly is None:
            return  # no update in progress: a stray or late chunk
        try:
            if self._assembly.add(chunk):
                self._complete.set()
        except ValueError as e:
            log.warning("model chunk refused: %s", e)

    async def apply(self, cmd: Command) -> tuple[bool, str]:
        """Wait for the manifest's file, verify it, swap it in; (ok, what happened)."""
        manifest = cmd.manifest
        if not manifest.url.startswith(MQTT_URL_PREFIX):
            return (
                False,
                f"model {manifest.version}: only {MQTT_URL_PREFIX}... transfers are supported, not {manifest.url!r}",
            )
        self._assembly = Assembly(manifest)
        self._complete.clear()
        try:
            await asyncio.wait_for(self._complete.wait(), self.timeout_s)
            blob = self._assembly.result()
        except TimeoutError:
            got = len(self._assembly.parts)
            return False, f"model {manifest.version}: only {got} chunk(s) arrived within {self.timeout_s:g} s"
        except ValueError as e:
            return False, f"{e}; model kept: {self.health.model_version}"
        finally:
            assembly, self._assembly = self._assembly, None
            del assembly
        path = await asyncio.to_thread(self.store.write, manifest.version, blob)
        try:
            await self.health.swap(path)
        except Exception as e:
            path.unlink(missing_ok=True)
            return (
                False,
                f"model {manifest.version} rejected ({e}); rolled back to {self.health.model_version}",
            )
        await asyncio.to_thread(self.store.make_current, path)
        return True, f"model {self.health.model_version} active"
