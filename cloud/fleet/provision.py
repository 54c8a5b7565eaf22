"""Provisioning a cabinet: its mutual-TLS identity, its config file and its secrets bundle.

``provision(cabinet_id, out, ...)`` writes into ``out``:

- ``cabinet.toml``: ``[cabinet] id``, ``[sync]`` broker, TLS files (as installed on the
  cabinet, ``/etc/cabinet/tls/...`` by default) and ``cloud_keys = ["keyid:base64"]`` (the
  cloud's signing key, made once per cloud in its data directory);
- ``tls/client.pem``, ``tls/client.key`` (0600), ``tls/ca.pem``: a client certificate with
  CN = cabinet id, issued by the fleet CA of ``deploy/pki.py`` (the broker's CA; created in
  ``<data_dir>/pki`` on first use unless ``--ca`` names the existing one);
- ``<id>-secrets.tar.gz`` (0600): the two directories above, to copy to the cabinet.

The CA code is ``deploy/pki.py`` loaded from its path (``deploy`` is not a package), so there is
one CA implementation for the broker, the cloud workers and the cabinets.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cloud.fleet.keys import load_or_create_key
from sync.topics import validate_cabinet_id

PKI_SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "pki.py"


class ProvisionError(ValueError):
    """Provisioning cannot be done; the message says which file or name is wrong."""


@dataclass(frozen=True)
class Provisioned:
    cabinet_id: str
    config_file: Path
    cert: Path
    key: Path
    ca: Path
    bundle: Path
    cloud_key_line: str


def load_pki(path: Path = PKI_SOURCE) -> ModuleType:
    """``deploy/pki.py`` as a module."""
    if not path.exists():
        raise ProvisionError(f"{path}: the fleet CA tool (deploy/pki.py) is not there; run from a checkout")
    spec = importlib.util.spec_from_file_location("cabinet_deploy_pki", path)
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cabinet_toml(
    cabinet_id: str,
    broker_host: str,
    broker_port: int,
    cloud_key_line: str,
    tls_dir: str,
) -> str:
    """The cabinet's config file (keys of cabinet/config.py); hardware sections stay at their defaults."""
    return (
        "# Written by `cabinet-cloud provision`: this cabinet's identity and its link to the cloud.\n"
        "# Hardware settings ([bus], [locks], ...): see `cabinet config docs`.\n\n"
        f"[cabinet]\nid = {_toml_str(cabinet_id)}\n\n"
        "[sync]\n"
        "enabled = true\n"
        f"broker_host = {_toml_str(broker_host)}\n"
        f"broker_port = {int(broker_port)}\n"
        "tls = true\n"
        f"ca_file = {_toml_str(tls_dir + '/ca.pem')}\n"
        f"cert_file = {_toml_str(tls_dir + '/client.pem')}\n"
        f"key_file = {_toml_str(tls_dir + '/client.key')}\n"
        f"cloud_keys = [{_toml_str(cloud_key_line)}]\n"
    )


def provision(
    cabinet_id: str,
    out: Path,
    data_dir: Path,
    *,
    ca_dir: Path | None = None,
    broker_host: str = "mqtt.example.com",
    broker_port: int = 8883,
    tls_dir: str = "/etc/cabinet/tls",
    days: int = 1825,
) -> Provisioned:
    """Create the cabinet's identity and files in ``out`` (see module doc)."""
    try:
        validate_cabinet_id(cabinet_id)
    except ValueError as e:
        raise ProvisionError(str(e)) from e
    out = Path(out)
    if (out / "cabinet.toml").exists() or (out / "tls" / "client.key").exists():
        raise ProvisionError(f"{out}: already holds a provisioned cabinet; refusing to overwrite it")
    key = load_or_create_key(data_dir)
    pki_mod = load_pki()
    ca_root = Path(ca_dir) if ca_dir else Path(data_dir) / "pki"
    try:
        pki: Any = pki_mod.Pki(ca_root) if (ca_root / "ca.key").exists() else pki_mod.Pki.init(ca_root)
        issued = pki.issue_cabinet(cabinet_id, days=days)
    except pki_mod.PkiError as e:
        raise ProvisionError(str(e)) from e
    tls = out / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    for src, name in ((issued.cert, "client.pem"), (issued.key, "client.key"), (issued.ca, "ca.pem")):
        shutil.copyfile(src, tls / name)
    os.chmod(tls / "client.key", 0o600)
    config = out / "cabinet.toml"
    config.write_text(cabinet_toml(cabinet_id, broker_host, broker_port, key.config_line, tls_dir))
    bundle = out / f"{cabinet_id}-secrets.tar.gz"
    fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(config, arcname="cabinet.toml")
        tar.add(tls, arcname="tls")
    return Provisioned(
        cabinet_id, config, tls / "client.pem", tls / "client.key", tls / "ca.pem", bundle, key.config_line
    )
