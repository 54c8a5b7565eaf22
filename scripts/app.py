"""Play the renter's phone app and the operator's console against the cloud's HTTP API.

Used with the demo (``./dev demo`` prints the cloud URL and keeps a session file in var/demo/):

  app.py register renter@example.com secret --card tok_ok   create an account with a sandbox card
  app.py login renter@example.com secret                    log in (the token is kept in the session file)
  app.py rent CAB-0001                                       rent at a cabinet: the cabinet ejects a battery
                                                             (WeChat, Alipay: after the renter confirms in
                                                             their app, which the demo plays)
  app.py pass                                                get an offline pass: prints its QR code and text
  app.py rentals | receipt RENTAL_ID                         your rentals, one receipt
  app.py phone +8613800138000 | verify +8613800138000 CODE   sign in (or up) by SMS code instead
  app.py nearby 52.5219 13.4132 | cabinet CAB-0001           cabinets near a point; one cabinet's page
  app.py --operator fleet | alerts | events CAB-0001 | money-check

Only the standard library, segno (for the QR code) and the project's money formatter
(``sync.amounts``); talks JSON over HTTP like the real app. Money is printed as the API gives it
(integer minor units) and, beside it, as people read it: ``"hold_amount": 3500, "hold_amount_text":
"35.00 EUR"``; durations likewise (``"duration_s": 3900.0, "duration": "1 h 05 min"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SESSION = ROOT / "var" / "demo" / "app-session.json"
MONEY_KEYS = ("hold_amount", "fee", "captured", "refunded", "paid", "amount", "amount_claimed", "refund_amount",
              "price_per_period", "daily_cap", "total_cap")  # fmt: skip


class ApiError(RuntimeError):
    pass


def call(base: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise ApiError(f"{method} {path}: HTTP {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise ApiError(f"cannot reach the cloud at {base}: {e.reason}") from None
    return json.loads(raw) if raw else None


def load_session(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_session(path: Path, session: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(session, indent=1))
    path.chmod(0o600)


def hand_to_phone(phone_dir: Path, answer: dict[str, Any]) -> None:
    """Leave a 202 ``awaiting_confirmation`` answer where the demo, which plays the renter's
    WeChat or Alipay app through its fake, picks it up (written whole, then renamed)."""
    phone_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = "".join(c for c in str(answer.get("rental_id", "")) if c.isalnum() or c in "-_") or "rental"
    tmp = phone_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(answer))
    tmp.chmod(0o600)
    tmp.replace(phone_dir / f"{name}.json")


def readable(value: Any, currency: str | None = None) -> Any:
    """``value`` with, beside each amount and duration, the text a person reads (the numbers stay)."""
    from sync.amounts import format_duration, format_money

    if isinstance(value, list):
        return [readable(v, currency) for v in value]
    if not isinstance(value, dict):
        return value
    currency = value.get("currency") if isinstance(value.get("currency"), str) else currency
    out: dict[str, Any] = {}
    for key, v in value.items():
        out[key] = readable(v, currency)
        if currency and key in MONEY_KEYS and isinstance(v, int) and not isinstance(v, bool):
            out[f"{key}_text"] = format_money(v, currency)
        if key == "duration_s" and isinstance(v, int | float) and not isinstance(v, bool):
            out["duration"] = format_duration(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cloud", help="cloud base URL (default: from the session file the demo writes)")
    ap.add_argument(
        "--session", type=Path, default=DEFAULT_SESSION, help="session file (default %(default)s)"
    )
    ap.add_argument("--operator", action="store_true", help="act with the operator's token")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("register", help="create a renter account")
    r.add_argument("email")
    r.add_argument("password")
    r.add_argument(
        "--card", default="tok_ok", help="sandbox card token (tok_ok, tok_decline, tok_insufficient...)"
    )
    lg = sub.add_parser("login", help="log in")
    lg.add_argument("email")
    lg.add_argument("password")
    rent = sub.add_parser("rent", help="rent a battery at a cabinet")
    rent.add_argument("cabinet")
    ps = sub.add_parser("pass", help="get an offline rent pass (QR code)")
    ps.add_argument("--ttl", type=int, default=86400, help="validity in seconds (default one day)")
    ph = sub.add_parser("phone", help="ask for a sign-in code by SMS (the demo's cloud writes it to its log)")
    ph.add_argument("phone", help="E.164, e.g. +8613800138000")
    vf = sub.add_parser(
        "verify", help="sign in (or up) with the SMS code; the token is kept in the session file"
    )
    vf.add_argument("phone")
    vf.add_argument("code")
    nb = sub.add_parser("nearby", help="cabinets near a point, nearest first")
    nb.add_argument("lat", type=float)
    nb.add_argument("lon", type=float)
    nb.add_argument("--radius", type=int, default=5000, help="metres (default 5000)")
    cb = sub.add_parser("cabinet", help="a cabinet's page: venue, packs ready, the tariff in words, the hold")
    cb.add_argument("cabinet")
    sub.add_parser("rentals", help="your rentals")
    rc = sub.add_parser("receipt", help="a rental's receipt")
    rc.add_argument("rental_id")
    sub.add_parser("fleet", help="(operator) every cabinet")
    sub.add_parser("alerts", help="(operator) open alerts")
    ev = sub.add_parser("events", help="(operator) a cabinet's events")
    ev.add_argument("cabinet")
    sub.add_parser("money-check", help="(operator) prove the books balance")
    args = ap.parse_args(argv)

    session = load_session(args.session)
    base = args.cloud or session.get("cloud")
    if not base:
        ap.error("no cloud URL: pass --cloud URL or run the demo (it writes the session file)")
    token = session.get("operator_token" if args.operator else "token")
    try:
        out: Any
        match args.cmd:
            case "register":
                call(base, "POST", "/api/users", body={"email": args.email, "password": args.password})
                t = call(base, "POST", "/api/login", body={"email": args.email, "password": args.password})[
                    "token"
                ]
                call(base, "PUT", "/api/me/card", t, {"card_token": args.card})
                session.update(cloud=base, token=t)
                save_session(args.session, session)
                out = {"registered": args.email, "card": args.card}
            case "login":
                t = call(base, "POST", "/api/login", body={"email": args.email, "password": args.password})[
                    "token"
                ]
                session.update(cloud=base, token=t)
                save_session(args.session, session)
                out = {"logged_in": args.email}
            case "rent":
                out = call(base, "POST", "/api/rentals", token, {"cabinet_id": args.cabinet})
                if out.get("status") == "awaiting_confirmation" and session.get("phone_dir"):
                    hand_to_phone(Path(session["phone_dir"]), out)
                    print(
                        f"app: confirm the hold in {out.get('provider')}'s app (client_action below); "
                        "the demo plays the renter there and then the cabinet ejects",
                        file=sys.stderr,
                    )
            case "pass":
                out = call(base, "POST", "/api/me/passes", token, {"ttl_s": args.ttl})
                text = out.get("text") or out.get("qr_text") or ""
                if text:
                    import segno

                    segno.make(text, error="m").terminal(compact=True)
            case "phone":
                out = call(base, "POST", "/api/auth/sms/start", body={"phone": args.phone})
            case "verify":
                got = call(
                    base, "POST", "/api/auth/sms/verify", body={"phone": args.phone, "code": args.code}
                )
                session.update(cloud=base, token=got["token"])
                save_session(args.session, session)
                out = {"signed_in": args.phone, "created": got["created"], "user": got["user"]}
            case "nearby":
                q = f"lat={args.lat}&lon={args.lon}&radius_m={args.radius}"
                out = call(base, "GET", f"/api/cabinets/nearby?{q}")
            case "cabinet":
                out = call(base, "GET", f"/api/cabinets/{args.cabinet}/public")
            case "rentals":
                out = call(base, "GET", "/api/me/rentals", token)
            case "receipt":
                out = call(base, "GET", f"/api/me/rentals/{args.rental_id}/receipt", token)
            case "fleet":
                out = call(base, "GET", "/api/fleet/cabinets", token)
            case "alerts":
                out = call(base, "GET", "/api/fleet/alerts", token)
            case "events":
                out = call(base, "GET", f"/api/fleet/cabinets/{args.cabinet}/events", token)
            case "money-check":
                out = call(base, "GET", "/api/money/check", token)
    except ApiError as e:
        print(f"app: {e}", file=sys.stderr)
        return 1
    print(json.dumps(readable(out), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
