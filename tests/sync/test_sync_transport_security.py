"""MqttTransport with TLS, mutual TLS and passwords, against a real Mosquitto configured for each."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sync.transport import Refused, TlsOptions

pytestmark = pytest.mark.timeout(60)


def _cert(
    subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key=None) -> str:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1, a client certificate for CAB-1, and a stranger's."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("cabinet-test-ca", ca_key, None, ca_key, ca=True)
    srv_key, cli_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    other_ca = _cert("stranger-ca", other_key, None, other_key, ca=True)
    return {
        "ca": _write(tmp_path / "ca.pem", ca),
        "server_cert": _write(
            tmp_path / "server.pem", _cert("broker", srv_key, ca.subject, ca_key, server=True)
        ),
        "server_key": _write(tmp_path / "server.key", key=srv_key),
        "client_cert": _write(tmp_path / "cab.pem", _cert("CAB-1", cli_key, ca.subject, ca_key)),
        "client_key": _write(tmp_path / "cab.key", key=cli_key),
        "stranger_cert": _write(
            tmp_path / "stranger.pem", _cert("CAB-X", other_key, other_ca.subject, other_key)
        ),
        "stranger_key": _write(tmp_path / "stranger.key", key=other_key),
    }


@pytest.fixture
def mtls_broker(make_broker, pki: dict[str, str]):
    return make_broker(
        f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\nuse_identity_as_username true\n",
    )


async def test_mutual_tls_connects_with_the_cabinet_certificate(mtls_broker, pki, transports) -> None:
    tls = TlsOptions(ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"])
    cab = transports("127.0.0.1", mtls_broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)], tls=tls)
    await cab.start()
    await cab.wait_connected(10)
    await cab.publish("cab/v1/CAB-1/cmd", b"over tls", qos=1)
    async with asyncio.timeout(5):
        async for m in cab.messages():
            assert m.payload == b"over tls"
            break


async def test_certificate_from_another_ca_is_turned_away(mtls_broker, pki, transports) -> None:
    tls = TlsOptions(ca_file=pki["ca"], cert_file=pki["stranger_cert"], key_file=pki["stranger_key"])
    cab = transports("127.0.0.1", mtls_broker.port, "CAB-X", tls=tls)
    await cab.start()
    with pytest.raises(TimeoutError):
        await cab.wait_connected(1.0)


async def test_broker_not_signed_by_our_ca_is_not_trusted(
    mtls_broker, pki, transports, tmp_path: Path
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    wrong_ca = _write(tmp_path / "wrong-ca.pem", _cert("other-ca", other, None, other, ca=True))
    tls = TlsOptions(ca_file=wrong_ca, cert_file=pki["client_cert"], key_file=pki["client_key"])
    cab = transports("127.0.0.1", mtls_broker.port, "CAB-1", tls=tls)
    await cab.start()
    with pytest.raises(TimeoutError):
        await cab.wait_connected(1.0)
    assert cab.last_error


@pytest.fixture
def password_broker(make_broker, tmp_path: Path):
    pw = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pw), "CAB-1", "s3cret"], check=True, capture_output=True
    )
    acl = tmp_path / "acl"
    acl.write_text("user CAB-1\ntopic readwrite cab/v1/CAB-1/#\n")
    return make_broker(f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\n")


async def test_password_login_and_wrong_password(password_broker, transports) -> None:
    good = transports("127.0.0.1", password_broker.port, "CAB-1", username="CAB-1", password="s3cret")
    bad = transports("127.0.0.1", password_broker.port, "CAB-2", username="CAB-1", password="nope")
    await good.start()
    await bad.start()
    await good.wait_connected(5)
    with pytest.raises(TimeoutError):
        await bad.wait_connected(1.0)
    assert "refused" in (bad.last_error or "")


async def test_publish_outside_the_acl_is_refused_by_the_broker(password_broker, transports) -> None:
    cab = transports("127.0.0.1", password_broker.port, "CAB-1", username="CAB-1", password="s3cret")
    await cab.start()
    await cab.wait_connected(5)
    await cab.publish("cab/v1/CAB-1/ev", b"mine", qos=1)
    with pytest.raises(Refused, match="CAB-2"):
        await cab.publish("cab/v1/CAB-2/ev", b"not mine", qos=1)
