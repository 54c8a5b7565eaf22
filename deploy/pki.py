#!/usr/bin/env python3
"""The fleet's MQTT certificate authority: CA, broker, cloud and per-cabinet certificates, CRL.

Mosquitto authenticates every client by its certificate (mutual TLS) and takes the
certificate's common name (CN) as the MQTT user name, so the CN is the identity the ACL
confines: a cabinet's CN is its cabinet id, the cloud's CN is ``cloud`` (or ``cloud-N`` for
more workers). Nothing here is committed to the repository: everything is generated on the
provisioning machine, and the CA key never leaves it.

Layout of the CA directory (``--dir``, mode 0700)::

    ca.key  ca.pem  crl.pem  index.json
    issued/broker/{broker.pem,broker.key,ca.pem,crl.pem}   -> /etc/mosquitto/certs/
    issued/cloud/<name>/{client.pem,client.key,ca.pem}     -> /etc/cabinet-cloud/tls/
    issued/cabinets/<id>/{client.pem,client.key,ca.pem}    -> /etc/cabinet/tls/

Keys are ECDSA P-256 (fast on a Pi, supported by OpenSSL, Mosquitto and Python's ssl).

Usage::

    pki.py --dir CA init [--name "Fleet CA"]
    pki.py --dir CA broker --dns mqtt.example.com [--ip 203.0.113.5]
    pki.py --dir CA cloud [--name cloud]
    pki.py --dir CA cabinet CAB-0001
    pki.py --dir CA revoke CAB-0001        # then install crl.pem on the broker and restart it
    pki.py --dir CA crl                    # re-sign the CRL before it expires (see --crl-days)
    pki.py --dir CA list
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CABINET_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # as cabinet.id in cabinet/config.py
CLOUD_NAME = re.compile(r"^cloud(-[0-9]{1,3})?$")
RESERVED = re.compile(r"^cloud(-[0-9]{1,3})?$", re.IGNORECASE)
CRL_DAYS = 180


class PkiError(Exception):
    """A provisioning step cannot be done; the message says which file or name is wrong."""


@dataclass(frozen=True)
class Issued:
    """Files of one issued certificate, ready to copy to the machine that uses them."""

    cert: Path
    key: Path
    ca: Path
    serial: int


@dataclass
class Record:
    """One line of the CA's index: what was issued to whom, and whether it is revoked."""

    serial: int
    cn: str
    kind: str  # broker, cloud, cabinet
    not_after: str
    revoked_at: str | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (no window with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Pki:
    """A CA directory: issue, revoke and list certificates, and keep the CRL current."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "ca.key").exists():
            raise PkiError(f"{self.root}: no CA here (ca.key missing); run `pki.py --dir {self.root} init`")
        self.ca_key = serialization.load_pem_private_key((self.root / "ca.key").read_bytes(), None)
        self.ca_cert = x509.load_pem_x509_certificate((self.root / "ca.pem").read_bytes())

    # --- CA ---------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, name: str = "Cabinet fleet CA", days: int = 3650) -> Pki:
        """Create a new CA (key, self-signed certificate, empty index and CRL) in ``root``."""
        root = Path(root)
        if (root / "ca.key").exists():
            raise PkiError(f"{root}: a CA already exists; refusing to overwrite ca.key")
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(root / "ca.key", _pem_key(key))
        (root / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / "index.json").write_text("[]\n")
        pki = cls(root)
        pki.write_crl()
        return pki

    def _index(self) -> list[Record]:
        return [Record(**r) for r in json.loads((self.root / "index.json").read_text())]

    def _save_index(self, records: list[Record]) -> None:
        tmp = self.root / "index.json.tmp"
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
        tmp.replace(self.root / "index.json")

    def records(self) -> list[Record]:
        """Everything this CA issued, oldest first."""
        return self._index()

    # --- issuing ----------------------------------------------------------------------

    def _issue(
        self,
        cn: str,
        kind: str,
        out: Path,
        cert_name: str,
        key_name: str,
        days: int,
        server: bool,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> Issued:
        key = _key()
        now = _now()
        serial = x509.random_serial_number()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_cert.public_key()), critical=False
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            if not names:
                raise PkiError("the broker certificate needs at least one --dns name or --ip address")
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        out.mkdir(parents=True, exist_ok=True)
        _write_private(out / key_name, _pem_key(key))
        (out / cert_name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / "ca.pem").write_bytes((self.root / "ca.pem").read_bytes())
        records = self._index()
        records.append(Record(serial, cn, kind, cert.not_valid_after_utc.isoformat()))
        self._save_index(records)
        return Issued(out / cert_name, out / key_name, out / "ca.pem", serial)

    def issue_broker(self, dns: list[str], ips: list[str] | None = None, days: int = 825) -> Issued:
        """The broker's server certificate (SAN = the names and addresses cabinets connect to)."""
        out = self.root / "issued" / "broker"
        issued = self._issue(
            dns[0] if dns else (ips or ["broker"])[0],
            "broker",
            out,
            "broker.pem",
            "broker.key",
            days,
            server=True,
            dns=tuple(dns),
            ips=tuple(ips or ()),
        )
        (out / "crl.pem").write_bytes((self.root / "crl.pem").read_bytes())
        return issued

    def issue_cabinet(self, cabinet_id: str, days: int = 1825) -> Issued:
        """A cabinet's client certificate, CN = cabinet id (its MQTT user name and topic level)."""
        if not CABINET_ID.match(cabinet_id):
            raise PkiError(f"cabinet id {cabinet_id!r}: only letters, digits, - and _ (1-32), as cabinet.id")
        if RESERVED.match(cabinet_id):
            raise PkiError(f"cabinet id {cabinet_id!r} is reserved for the cloud's identities")
        out = self.root / "issued" / "cabinets" / cabinet_id
        return self._issue(cabinet_id, "cabinet", out, "client.pem", "client.key", days, server=False)

    def issue_cloud(self, name: str = "cloud", days: int = 825) -> Issued:
        """A cloud worker's client certificate; each worker needs its own name and a `user` ACL block."""
        if not CLOUD_NAME.match(name):
            raise PkiError(f"cloud identity {name!r}: must be 'cloud' or 'cloud-N'")
        out = self.root / "issued" / "cloud" / name
        return self._issue(name, "cloud", out, "client.pem", "client.key", days, server=False)

    # --- revocation -------------------------------------------------------------------

    def revoke(self, cn: str) -> list[int]:
        """Revoke every unrevoked certificate issued to ``cn`` and rewrite the CRL; returns the serials."""
        records = self._index()
        now = _now().isoformat()
        hit = [r for r in records if r.cn == cn and r.revoked_at is None]
        if not hit:
            raise PkiError(f"no valid certificate for {cn!r} in {self.root / 'index.json'}")
        for r in hit:
            r.revoked_at = now
        self._save_index(records)
        self.write_crl()
        return [r.serial for r in hit]

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """Sign a fresh CRL of every revoked serial; it must be renewed before ``days`` run out,
        or the broker refuses every client (OpenSSL rejects an expired CRL)."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for r in self._index():
            if r.revoked_at:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(r.serial)
                    .revocation_date(dt.datetime.fromisoformat(r.revoked_at))
                    .build()
                )
        crl = builder.sign(self.ca_key, hashes.SHA256())
        pem = crl.public_bytes(serialization.Encoding.PEM)
        (self.root / "crl.pem").write_bytes(pem)
        broker = self.root / "issued" / "broker"
        if broker.is_dir():
            (broker / "crl.pem").write_bytes(pem)
        return self.root / "crl.pem"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pki.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", required=True, type=Path, help="CA directory (keep it offline, mode 0700)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p = sub.add_parser("init", help="create the CA")
    p.add_argument("--name", default="Cabinet fleet CA")
    p.add_argument("--days", type=int, default=3650)
    p = sub.add_parser("broker", help="issue the broker's server certificate")
    p.add_argument("--dns", action="append", default=[], help="host name cabinets connect to (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="IP address cabinets connect to (repeatable)")
    p.add_argument("--days", type=int, default=825)
    p = sub.add_parser("cloud", help="issue a cloud worker's client certificate")
    p.add_argument("--name", default="cloud")
    p.add_argument("--days", type=int, default=825)
    p = sub.add_parser("cabinet", help="issue a cabinet's client certificate (CN = cabinet id)")
    p.add_argument("cabinet_id")
    p.add_argument("--days", type=int, default=1825)
    p = sub.add_parser(
        "revoke", help="revoke every certificate of a cabinet (or cloud name); rewrites the CRL"
    )
    p.add_argument("cn")
    p = sub.add_parser("crl", help="re-sign the CRL (do it well before its next-update date)")
    p.add_argument("--days", type=int, default=CRL_DAYS)
    sub.add_parser("list", help="list issued certificates")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "init":
            Pki.init(args.dir, args.name, args.days)
            print(f"CA created in {args.dir}; keep {args.dir / 'ca.key'} offline")
            return 0
        pki = Pki(args.dir)
        if args.cmd == "broker":
            i = pki.issue_broker(args.dns, args.ip, args.days)
            print(f"broker certificate in {i.cert.parent} -> /etc/mosquitto/certs/")
        elif args.cmd == "cloud":
            i = pki.issue_cloud(args.name, args.days)
            print(f"cloud certificate {args.name!r} in {i.cert.parent} -> /etc/cabinet-cloud/tls/")
        elif args.cmd == "cabinet":
            i = pki.issue_cabinet(args.cabinet_id, args.days)
            print(f"cabinet {args.cabinet_id} certificate in {i.cert.parent} -> /etc/cabinet/tls/")
        elif args.cmd == "revoke":
            serials = pki.revoke(args.cn)
            print(f"revoked {args.cn}: serials {', '.join(f'{s:x}' for s in serials)}")
            print(f"install {args.dir / 'crl.pem'} as the broker's crlfile and restart mosquitto")
        elif args.cmd == "crl":
            print(f"CRL re-signed: {pki.write_crl(args.days)}")
        elif args.cmd == "list":
            for r in pki.records():
                state = f"REVOKED {r.revoked_at}" if r.revoked_at else "valid"
                print(f"{r.serial:040x}  {r.kind:8} {r.cn:32} until {r.not_after}  {state}")
    except PkiError as e:
        print(f"pki.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
