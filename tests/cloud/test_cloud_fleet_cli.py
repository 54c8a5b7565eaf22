"""cabinet-cloud keys and provision: one signing key per cloud, a cabinet identity that a cabinet loads."""

from __future__ import annotations

import stat
import tarfile

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from cabinet import config as cabinet_config
from cloud.cli import main
from cloud.db import cabinets, make_engine
from sync.signing import keyring_from_b64


def test_keys_are_made_once_and_printed_as_the_line_cabinets_trust(tmp_path, capsys) -> None:
    assert main(["keys", "--data-dir", str(tmp_path / "d")]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keys", "--data-dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.strip() == first
    key_id, _, b64 = first.partition(":")
    assert keyring_from_b64({key_id: b64})  # a valid Ed25519 public key
    assert stat.S_IMODE((tmp_path / "d" / "signing-key.pem").stat().st_mode) == 0o600


def test_provision_writes_a_config_the_cabinet_loads_a_client_certificate_and_a_bundle(
    tmp_path, capsys
) -> None:
    data, out, db = tmp_path / "cloud", tmp_path / "CAB-0042", f"sqlite:///{tmp_path / 'c.db'}"
    argv = ["provision", "CAB-0042", "--out", str(out), "--data-dir", str(data), "--database", db,
            "--broker-host", "mqtt.test", "--broker-port", "8884", "--register", "--create-ca"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["keys", "--data-dir", str(data)]) == 0
    key_line = capsys.readouterr().out.strip()
    cfg = cabinet_config.load(out / "cabinet.toml")
    assert (cfg["cabinet.id"], cfg["sync.broker_host"], cfg["sync.broker_port"]) == (
        "CAB-0042",
        "mqtt.test",
        8884,
    )
    assert cfg["sync.cloud_keys"] == [key_line] and cfg["sync.tls"] is True
    cert = x509.load_pem_x509_certificate((out / "tls" / "client.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CAB-0042"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    ca = x509.load_pem_x509_certificate((out / "tls" / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE((out / "tls" / "client.key").stat().st_mode) == 0o600
    with tarfile.open(out / "CAB-0042-secrets.tar.gz") as tar:
        assert {"cabinet.toml", "tls/client.key", "tls/client.pem", "tls/ca.pem"} <= set(tar.getnames())
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(cabinets.c.id)).scalars().all() == ["CAB-0042"]
    engine.dispose()
    assert main(argv) == 2  # never overwrites a provisioned cabinet


def test_provision_refuses_an_id_that_cannot_be_a_topic_level(tmp_path, capsys) -> None:
    assert main(["provision", "CAB/1", "--out", str(tmp_path / "x"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "cabinet id" in capsys.readouterr().err


def test_provision_never_creates_the_fleet_ca_unless_asked(tmp_path, capsys) -> None:
    data, out = tmp_path / "cloud", tmp_path / "CAB-0043"
    argv = ["provision", "CAB-0043", "--out", str(out), "--data-dir", str(data)]
    assert main(argv) == 2  # before: a CA key was made in DATA_DIR/pki on the online host
    assert "no fleet CA" in capsys.readouterr().err
    assert not (data / "pki" / "ca.key").exists() and not (out / "cabinet.toml").exists()
    from cloud.fleet.provision import load_pki

    load_pki().Pki.init(tmp_path / "offline-ca")  # made on the provisioning station
    assert main([*argv, "--ca", str(tmp_path / "offline-ca")]) == 0
    assert not (data / "pki").exists()
    ca = x509.load_pem_x509_certificate((tmp_path / "offline-ca" / "ca.pem").read_bytes())
    x509.load_pem_x509_certificate((out / "tls" / "client.pem").read_bytes()).verify_directly_issued_by(ca)
