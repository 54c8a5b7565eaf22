"""The cloud's fleet side: MQTT ingest, the fleet view, signed commands/config/passes, provisioning."""

from cloud.fleet.commands import CommandRefused, Signatures, SignedCommand, SignedConfig
from cloud.fleet.ingest import BatchOutcome, EventApplier
from cloud.fleet.keys import CloudKey, SigningKeyError, load_key, load_or_create_key
from cloud.fleet.service import FleetLink, FleetSettings, mqtt_options_from

__all__ = [
    "BatchOutcome",
    "CloudKey",
    "CommandRefused",
    "EventApplier",
    "FleetLink",
    "FleetSettings",
    "Signatures",
    "SignedCommand",
    "SignedConfig",
    "SigningKeyError",
    "load_key",
    "load_or_create_key",
    "mqtt_options_from",
]
