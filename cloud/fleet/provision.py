"""Provisioning a cabinet: its mutual-TLS identity, its config file and its secrets bundle.

``provision(cabinet_id, out, ...)`` writes into ``out``:

- ``cabinet.toml``: ``[cabinet] id``, ``[sync]`` broker, TLS files (as installed on the
  cabinet, ``/etc/cabinet/tls/...`` by default) and ``cloud_keys = ["keyid:base64", ...]`` (the
  cloud's signing key, made once per cloud in its data directory; during a key rotation's
  overlap also the previous key, which still signs configs);
- ``tls/client.pem``, ``tls/client.key`` (0600), ``tls/ca.pem``: a client certificate with
  CN = cabinet id, issued by the fleet CA of ``deploy/pki.py`` (the broker's CA: ``ca_dir``,
  default ``<data_dir>/pki``). The CA's key belongs on an offline machine (docs/deploy.md,
  "The offline fleet CA"): provisioning never creates one unless asked (``create_ca=True``,
  ``--create-ca``: demos and tests); without a CA it refuses and says how to issue offline;
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

from cloud.errors import CloudError
from cloud.fleet.keys import load_or_create_key
from sync.topics import validate_cabinet_id

PKI_SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "pki.py"


class ProvisionError(CloudError, ValueError):
    """Provisioning cannot be done; the message says which file or name is wrong."""

    status = 500  # a command-line error; no request raises it
    code = "provision_error"


class NoCA(ProvisionError):
    """No fleet CA where provisioning looked, and creating one was not asked for."""

    status = 500
    code = "no_ca"


@dataclass(frozen=True)
class Provisioned:
    cabinet_id: str
    config_file: Path
    cert: Path
    key: Path
    ca: Path
    bundle: Path
    cloud_key_line: str
    cloud_key_lines: tuple[str, ...] = ()


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
    cloud_key_lines: str | list[str],
    tls_dir: str,
) -> str:
    """The cabinet's config file (keys of cabinet/config.py); hardware sections stay at their defaults."""
    lines = [cloud_key_lines] if isinstance(cloud_key_lines, str) else list(cloud_key_lines)
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
        f"cloud_keys = [{', '.join(_toml_str(line) for line in lines)}]\n"
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
    create_ca: bool = False,
) -> Provisioned:
    """Create the cabinet's identity and files in ``out`` (see module doc).

    Raises ``NoCA`` when ``ca_dir`` (default ``data_dir/pki``) holds no CA and ``create_ca``
    is false: the fleet CA's key is made on the offline provisioning station, not here.
    """
    try:
        validate_cabinet_id(cabinet_id)
    except ValueError as e:
        raise ProvisionError(str(e)) from e
    out = Path(out)
    if (out / "cabinet.toml").exists() or (out / "tls" / "client.key").exists():
        raise ProvisionError(f"{out}: already holds a provisioned cabinet; refusing to overwrite it")
    pki_mod = load_pki()
    ca_root = Path(ca_dir) if ca_dir else Path(data_dir) / "pki"
    if not (ca_root / "ca.key").exists() and not create_ca:
        raise NoCA(
            f"{ca_root}: no fleet CA (ca.key). Keep the CA offline: on the provisioning station run"
            f" `deploy/pki.py --dir CA init` once and `deploy/pki.py --dir CA cabinet {cabinet_id}`,"
            " or give --ca CA_DIR there; --create-ca makes one here (demos and tests only)"
        )
    key = load_or_create_key(data_dir)
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
    lines = key.config_lines
    config.write_text(cabinet_toml(cabinet_id, broker_host, broker_port, lines, tls_dir))
    bundle = out / f"{cabinet_id}-secrets.tar.gz"
    fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(config, arcname="cabinet.toml")
        tar.add(tls, arcname="tls")
    return Provisioned(
        cabinet_id,
        config,
        tls / "client.pem",
        tls / "client.key",
        tls / "ca.pem",
        bundle,
        key.config_line,
        tuple(lines),
    )
