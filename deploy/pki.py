#!/usr/bin/env python3
"""The fleet's MQTT certificate authority: CA, broker, cloud and per-cabinet certificates, CRL.

Mosquitto authenticates every client by its certificate (mutual TLS) and takes the
certificate's common name (CN) as the MQTT user name, so the CN is the identity the ACL
confines: a cabinet's CN is its cabinet id, the cloud's CN is ``cloud`` (or ``cloud-N`` for
more workers). Nothing here is committed to the repository: everything is generated on the
provisioning machine, and the CA key never leaves it.

Access control is Mosquitto's dynamic-security plugin, not an ``acl_file``: Mosquitto 2.0
grants every SUBSCRIBE under an ``acl_file`` and checks read access only on delivery, so a
cabinet could join the cloud's shared group ``$share/cloud/cab/v1/+/ev`` and make every message
whose turn fell on it vanish for the whole group (issue 11.5). The plugin checks subscriptions
when they are made, and the SUBACK refuses them (0x87). Its configuration is derived from this
CA's index, the one list of who may connect: every valid cloud worker gets role ``cloud``, every
valid cabinet a role of its own, limited to its own topics (the plugin has no ``%u`` patterns),
and revoked identities are left out. ``dynamic-security.json`` is rewritten on every issue and
revocation; ``control`` prints the same change as a live command for a running broker.

Layout of the CA directory (``--dir``, mode 0700)::

    ca.key  ca.pem  crl.pem  index.json
    dynamic-security.json                                  -> /var/lib/mosquitto/ (owner mosquitto)
    issued/broker/{broker.pem,broker.key,ca.pem,crl.pem}   -> /etc/mosquitto/certs/
    issued/cloud/<name>/{client.pem,client.key,ca.pem}     -> /etc/cabinet-cloud/tls/
    issued/cabinets/<id>/{client.pem,client.key,ca.pem}    -> /etc/cabinet/tls/
    issued/admin/{client.pem,client.key,ca.pem}            stays here (live ACL changes)

Keys are ECDSA P-256 (fast on a Pi, supported by OpenSSL, Mosquitto and Python's ssl).

Usage::

    pki.py --dir CA init [--name "Fleet CA"]
    pki.py --dir CA broker --dns mqtt.example.com [--ip 203.0.113.5]
    pki.py --dir CA cloud [--name cloud]
    pki.py --dir CA cabinet CAB-0001
    pki.py --dir CA admin                  # the identity that may change the broker's ACL live
    pki.py --dir CA control add CAB-0001   # the live ACL change, for mosquitto_pub -s (docs/deploy.md)
    pki.py --dir CA revoke CAB-0001        # then install crl.pem on the broker and reload it
    pki.py --dir CA crl                    # re-sign the CRL before it expires (see --crl-days)
    pki.py --dir CA acl                    # rewrite dynamic-security.json from the index
    pki.py --dir CA list

A new CRL takes effect with a reload (SIGHUP: ``systemctl reload mosquitto``) for every new
connection; a session that is already open survives the reload until it reconnects. To cut a
revoked cabinet off at once, delete its ACL client live (``control remove``: the broker drops
the connection) or restart the broker.
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

# The protocol's cabinet id rule, copied from sync/topics.py (CABINET_ID_PATTERN, RESERVED_IDS)
# because this script runs without the project's dependencies; tests/deploy checks the two agree.
CABINET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
CLOUD_NAME = re.compile(r"^cloud(-[0-9]{1,3})?$")
RESERVED = re.compile(r"^cloud(-[0-9]{1,3})?$", re.IGNORECASE)
# The broker ACL administrator's CN: a '.' is never part of a cabinet id or a cloud name.
ADMIN_CN = "dynsec.admin"
CRL_DAYS = 180
DYNSEC_FILE = "dynamic-security.json"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CABINET_SENDS = ("ev", "tm", "state")  # sync.topics: the up-channels (edge -> cloud)
CABINET_RECEIVES = ("ack", "cmd", "cfg", "model")  # and the down-channels
CLOUD_ROLE = "cloud"
ADMIN_ROLE = "dynsec-admin"


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


def check_cabinet_id(cabinet_id: str) -> str:
    """Return ``cabinet_id`` or raise ``PkiError``: the protocol's rule (see ``CABINET_ID``)."""
    if not isinstance(cabinet_id, str) or CABINET_ID.fullmatch(cabinet_id) is None:
        raise PkiError(
            f"cabinet id {cabinet_id!r}: 1-32 letters, digits, - and _, starting with a letter "
            "or digit (the protocol's rule, as cabinet.id)"
        )
    if RESERVED.fullmatch(cabinet_id):
        raise PkiError(f"cabinet id {cabinet_id!r} is reserved for the cloud's identities")
    return cabinet_id


def _acl(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def cabinet_role_name(cabinet_id: str) -> str:
    return f"cabinet:{cabinet_id}"


def cabinet_acls(cabinet_id: str) -> list[dict]:
    """A cabinet's own topics, literally: it publishes its up-channels and subscribes to
    (and receives) its down-channels; nothing else, and no wildcard subscription at all."""
    acls = [_acl("publishClientSend", f"cab/v1/{cabinet_id}/{ch}") for ch in CABINET_SENDS]
    for ch in CABINET_RECEIVES:
        acls.append(_acl("subscribeLiteral", f"cab/v1/{cabinet_id}/{ch}"))
        acls.append(_acl("publishClientReceive", f"cab/v1/{cabinet_id}/{ch}"))
    return acls


def cloud_acls() -> list[dict]:
    """The cloud workers: all of ``cab/v1/#``, and the shared group ``cloud`` on it (only they)."""
    return [
        _acl("publishClientSend", "cab/v1/#"),
        _acl("publishClientReceive", "cab/v1/#"),
        _acl("subscribePattern", "cab/v1/#"),
        _acl("subscribePattern", "$share/cloud/cab/v1/#"),
    ]


def admin_acls() -> list[dict]:
    """The plugin's control topics (``$CONTROL/dynamic-security/v1`` and its ``/response``)."""
    t = "$CONTROL/dynamic-security/#"
    return [_acl("publishClientSend", t), _acl("publishClientReceive", t), _acl("subscribePattern", t)]


def dynsec_config(identities: dict[str, str]) -> dict:
    """The dynamic-security plugin's whole configuration for ``{cn: kind}``.

    Default access denies everything but unsubscribing; a client's role grants the rest. The
    clients have no password: with ``use_identity_as_username`` the broker takes the user name
    from the verified certificate and never asks the plugin to check a password.
    """
    clients: list[dict] = []
    roles: list[dict] = [
        {"rolename": CLOUD_ROLE, "acls": cloud_acls()},
        {"rolename": ADMIN_ROLE, "acls": admin_acls()},
    ]
    for cn, kind in sorted(identities.items()):
        if kind == "cabinet":
            roles.append({"rolename": cabinet_role_name(cn), "acls": cabinet_acls(cn)})
            clients.append({"username": cn, "roles": [{"rolename": cabinet_role_name(cn)}]})
        elif kind == "cloud":
            clients.append({"username": cn, "roles": [{"rolename": CLOUD_ROLE}]})
        elif kind == "admin":
            clients.append({"username": cn, "roles": [{"rolename": ADMIN_ROLE}]})
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def control_commands(action: str, cn: str, kind: str) -> dict:
    """The live change for a running broker (publish to ``$CONTROL/dynamic-security/v1`` as
    ``ADMIN_CN``): ``add`` creates the client (and a cabinet's role), ``remove`` deletes them;
    the broker disconnects a deleted client at once."""
    role = cabinet_role_name(cn) if kind == "cabinet" else {"cloud": CLOUD_ROLE, "admin": ADMIN_ROLE}[kind]
    commands: list[dict] = []
    if action == "add":
        if kind == "cabinet":
            commands.append({"command": "createRole", "rolename": role, "acls": cabinet_acls(cn)})
        commands.append({"command": "createClient", "username": cn, "roles": [{"rolename": role}]})
    elif action == "remove":
        commands.append({"command": "deleteClient", "username": cn})
        if kind == "cabinet":
            commands.append({"command": "deleteRole", "rolename": role})
    else:
        raise PkiError(f"control action {action!r}: add or remove")
    return {"commands": commands}


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
        pki.write_dynsec()
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
        usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        if kind == "cabinet":  # it also serves the technician UI over HTTPS (web.tech_tls, issue 11.6)
            usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
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
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
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
        self.write_dynsec()
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
        check_cabinet_id(cabinet_id)
        out = self.root / "issued" / "cabinets" / cabinet_id
        return self._issue(cabinet_id, "cabinet", out, "client.pem", "client.key", days, server=False)

    def issue_cloud(self, name: str = "cloud", days: int = 825) -> Issued:
        """A cloud worker's client certificate; the broker ACL gives every one role ``cloud``."""
        if not isinstance(name, str) or CLOUD_NAME.fullmatch(name) is None:
            raise PkiError(f"cloud identity {name!r}: must be 'cloud' or 'cloud-N'")
        out = self.root / "issued" / "cloud" / name
        return self._issue(name, "cloud", out, "client.pem", "client.key", days, server=False)

    def issue_admin(self, days: int = 825) -> Issued:
        """The broker ACL administrator (CN ``dynsec.admin``): may only use the plugin's
        control topics. Keep it on the provisioning machine, like the CA."""
        out = self.root / "issued" / "admin"
        return self._issue(ADMIN_CN, "admin", out, "client.pem", "client.key", days, server=False)

    # --- broker access control --------------------------------------------------------

    def identities(self) -> dict[str, str]:
        """``{cn: kind}`` of every client CN with a certificate that is neither revoked nor expired."""
        now = _now()
        found: dict[str, str] = {}
        for r in self._index():
            if r.kind in ("cloud", "cabinet", "admin") and r.revoked_at is None:
                if dt.datetime.fromisoformat(r.not_after) > now:
                    found[r.cn] = r.kind
        return found

    def write_dynsec(self) -> Path:
        """Rewrite ``dynamic-security.json`` from the index (see the module doc)."""
        path = self.root / DYNSEC_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dynsec_config(self.identities()), indent=1) + "\n")
        tmp.replace(path)
        return path

    def control(self, action: str, cn: str) -> dict:
        """The live ACL change for ``cn`` (``add`` needs a valid certificate for it)."""
        kinds = {r.cn: r.kind for r in self._index() if r.kind in ("cloud", "cabinet", "admin")}
        if cn not in kinds:
            raise PkiError(f"{cn!r}: this CA issued no client certificate to it")
        if action == "add" and cn not in self.identities():
            raise PkiError(f"{cn!r} has no valid certificate (revoked or expired): nothing to add")
        return control_commands(action, cn, kinds[cn])

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
        self.write_dynsec()
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
    p = sub.add_parser("admin", help=f"issue the broker ACL administrator's certificate (CN {ADMIN_CN})")
    p.add_argument("--days", type=int, default=825)
    p = sub.add_parser("control", help=f"print the live ACL change for {CONTROL_TOPIC} (JSON)")
    p.add_argument("action", choices=["add", "remove"])
    p.add_argument("cn")
    sub.add_parser("acl", help=f"rewrite {DYNSEC_FILE} (the broker's ACL) from the index")
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
            print(f"broker ACL: {args.dir / DYNSEC_FILE} (or live: control add {args.cabinet_id})")
        elif args.cmd == "revoke":
            serials = pki.revoke(args.cn)
            print(f"revoked {args.cn}: serials {', '.join(f'{s:x}' for s in serials)}")
            print(f"install {args.dir / 'crl.pem'} as the broker's crlfile and reload mosquitto")
            print(
                f"cut an open session now: pki.py --dir {args.dir} control remove {args.cn} (docs/deploy.md)"
            )
        elif args.cmd == "admin":
            i = pki.issue_admin(args.days)
            print(f"broker ACL administrator {ADMIN_CN!r} in {i.cert.parent}; keep it offline")
        elif args.cmd == "control":
            print(json.dumps(pki.control(args.action, args.cn)))
        elif args.cmd == "acl":
            print(f"broker ACL written: {pki.write_dynsec()}")
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
