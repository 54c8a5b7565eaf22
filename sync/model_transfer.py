"""A fault model file in chunks over MQTT (topic ``model``), checked against a signed manifest.

The chunks themselves are not signed: the cabinet accepts the assembled file only when its
size and SHA-256 equal those of a ``ModelManifest`` that arrived in a signed ``model_update``
command, so a forged or damaged chunk can only make the update fail, never change the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sync.codec import WireMessage, as_bytes, as_int, as_text, require
from sync.config import ModelManifest
from sync.topics import validate_cabinet_id

CHUNK_BYTES = 128 * 1024
"""Model bytes per chunk (the message limit is 256 KiB)."""
MAX_CHUNKS = 4096
MQTT_URL_PREFIX = "mqtt:chunks/"
"""``ModelManifest.url`` for a model sent as chunks on the ``model`` topic."""


@dataclass(frozen=True)
class ModelChunk(WireMessage):
    """Chunk ``index`` of ``count`` of model ``version`` for ``cabinet``."""

    KIND = "model"
    cabinet: str
    version: str
    index: int
    count: int
    data: bytes

    def __post_init__(self) -> None:
        validate_cabinet_id(self.cabinet)
        as_text(self.version, "model.version")
        as_int(self.count, "model.count", 1, MAX_CHUNKS)
        as_int(self.index, "model.index", 0, self.count - 1)
        as_bytes(self.data, "model.data", CHUNK_BYTES)


def manifest_for(blob: bytes, version: str, min_runtime: str = "1.20") -> ModelManifest:
    """The manifest of a model file sent as chunks over MQTT."""
    return ModelManifest(
        version, hashlib.sha256(blob).hexdigest(), MQTT_URL_PREFIX + version, len(blob), min_runtime
    )


def split(cabinet: str, version: str, blob: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[ModelChunk]:
    """The chunks to publish for ``blob``."""
    require(0 < chunk_bytes <= CHUNK_BYTES, f"chunk size {chunk_bytes} outside 1..{CHUNK_BYTES}")
    parts = [blob[i : i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)] or [b""]
    require(len(parts) <= MAX_CHUNKS, f"model of {len(blob)} bytes needs more than {MAX_CHUNKS} chunks")
    return [ModelChunk(cabinet, version, i, len(parts), p) for i, p in enumerate(parts)]


class Assembly:
    """Collects the chunks of one manifest's file; ``result()`` checks size and hash."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self.count: int | None = None
        self.parts: dict[int, bytes] = {}

    def add(self, chunk: ModelChunk) -> bool:
        """Keep a chunk of this manifest's version; True once every chunk is here."""
        if chunk.version != self.manifest.version:
            return False
        if self.count is not None and chunk.count != self.count:
            raise ValueError(
                f"model {chunk.version}: chunk says {chunk.count} chunks, earlier ones {self.count}"
            )
        self.count = chunk.count
        self.parts[chunk.index] = chunk.data
        return self.complete

    @property
    def complete(self) -> bool:
        return self.count is not None and len(self.parts) == self.count

    def result(self) -> bytes:
        """The assembled file; ValueError when its size or SHA-256 differ from the manifest."""
        blob = b"".join(self.parts[i] for i in range(self.count or 0))
        if len(blob) != self.manifest.size:
            raise ValueError(
                f"model {self.manifest.version}: {len(blob)} bytes, manifest says {self.manifest.size}"
            )
        digest = hashlib.sha256(blob).hexdigest()
        if digest != self.manifest.sha256:
            raise ValueError(
                f"model {self.manifest.version}: sha256 {digest[:16]}... differs from the manifest's"
            )
        return blob
