"""A local fake of WeChat Pay API v3 for Pay Score (微信支付分) deposit-free rentals.

An HTTP server on 127.0.0.1 (``http.server.ThreadingHTTPServer`` in a background thread) with
the endpoints the adapter uses, checking and producing signatures as WeChat Pay documents them:

- requests must carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
  signature="..",timestamp="..",serial_no=".."``, the signature being RSA-SHA256 (PKCS#1 v1.5)
  with the merchant key over ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``; it is verified
  with the merchant public key (wrong key, serial, merchant or a timestamp more than 5 minutes
  off: 401 ``SIGN_ERROR``);
- answers are signed with the platform key over ``TIMESTAMP\\nNONCE\\nBODY\\n`` in
  ``Wechatpay-Timestamp/-Nonce/-Signature/-Serial/-Signature-Type`` (the bill download is not
  signed, as documented); ``Wechatpay-Serial`` is the WeChat Pay public key id (public key mode)
  or the platform certificate's serial (certificate mode, with ``GET /v3/certificates`` serving
  the certificates AES-256-GCM encrypted under the APIv3 key, associated data "certificate");
- notifications are POSTed to the ``notify_url`` of the order/refund with a resource encrypted
  with AEAD_AES_256_GCM under the APIv3 key and signed like answers; a delivery not answered
  2xx is repeated on ``retry_schedule_s`` (WeChat: 15s/15s/30s/3m/... over 24 h 4 min).

Pay Score behaviour: create (``CREATED``, "原参重入": the same parameters give the same answer,
other parameters under the same ``out_order_no`` are refused), the renter's confirmation
(:meth:`WeChatPayFake.user_confirm`: checks the mini program's HMAC-SHA256 ``sign``; a renter in
``low_score_openids`` cannot confirm; ``PAYSCORE.USER_CONFIRM``; or
:meth:`WeChatPayFake.user_opens_business_view` with only what the phone has, the order found by
its ``package``), ``CREATED`` orders expire after
``confirm_ttl_s`` (WeChat: 30 days unchanged, no notification), complete (``MCH_COMPLETE``;
``total_amount`` = the sum of the items, at most the risk fund), WeChat's collection
(``USER_PAID`` + ``PAYSCORE.USER_PAID``, or ``USER_PAYING`` forever for a renter in
``unpayable_openids`` until :meth:`WeChatPayFake.collect`), cancel (``CREATED`` or
``USER_CONFIRM`` only), refunds (``PROCESSING`` then ``SUCCESS`` + ``REFUND.SUCCESS``, or
``ABNORMAL`` / ``CLOSED`` from ``refund_outcomes``), the
trade bill (ALL, GZIP, SHA1, the documented columns with a "`" before every value, Beijing
time), profit sharing (receivers added first, at most ``max_sharing_ratio`` of the payment,
``PROCESSING`` then ``FINISHED``, no notification to the payer) and consumer complaints
(``COMPLAINT.CREATE`` / ``COMPLAINT.STATE_CHANGE`` naming the complaint, details by query).

Failure modes, switched by the test: :meth:`fail_next` (an error answer, before or after the
effect), :meth:`timeout_next` (answer after the client gave up, with or without the effect),
:meth:`corrupt_signature_next` (an answer whose signature does not verify), declines
(``max_risk_amount``: 403 ``RULE_LIMIT``), renters who never confirm (:meth:`advance` expires),
collections that fail, and notifications duplicated (``notify_copies``), delayed
(``notify_delay_s``), held and released in any order (:meth:`pause_notifications`), signed with
a skewed clock (``notify_timestamp_offset_s``) or sent before the API answer
(``notify_before_answer``).

Documentation followed (read in 2025; the page dates are the "更新时间" they showed):
Pay Score create https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter6_1_1.shtml and
https://pay.weixin.qq.com/doc/v3/merchant/4012587900 (2025.03.06), query
https://pay.weixin.qq.com/doc/v3/merchant/4012587902 (2024.12.10), complete
https://pay.weixin.qq.com/docs/merchant/apis/weixin-pay-score-no-confirm/complete-service-order.html
(2024.09.27), cancel https://pay.weixin.qq.com/docs/merchant/apis/weixin-pay-score/service-order/cancel-service-order.html,
signatures https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml, callbacks
https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_2.shtml, refunds
https://pay.weixin.qq.com/docs/merchant/apis/weixin-pay-score/refunds/create.html, the trade bill
https://pay.weixin.qq.com/docs/merchant/apis/jsapi-payment/get-trade-bill.html (2025.01.10) and
https://pay.weixin.qq.com/docs/merchant/products/bill-download/format-trade.html (2024.11.25),
profit sharing https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter8_1_1.shtml, complaints
https://pay.weixin.qq.com/docs/merchant/apis/consumer-complaint/complaints/query-complaint-v2.html,
the mini program confirmation https://pay.weixin.qq.com/doc/global/v3/zh/4014096501.

Where the documents leave a detail open, the fake chooses and says so: error codes of refused
repeats (400 ``INVALID_REQUEST``) and wrong states; the deduction's ``out_trade_no`` (the trade
bill's 商户订单号) is the service order's ``out_order_no``; the bill's SHA1 is of the file as
downloaded; the bill's 交易类型 is written ``PAYSCORE``.

Not covered: Pay Score's modify / pay (催收) / sync / direct-complete, authorizations
(permissions), the no-confirm mode and partner (服务商) mode; https-only and IP rules for
``notify_url``; nonce replay; profit-sharing return, unfreeze, receiver deletion and bills;
complaint responses; the fund flow bill and other bill types; the real retry schedule (it is
``retry_schedule_s``, short for tests). A renter's eligibility is a list (``low_score_openids``),
not a score; fees are a flat ``fee_rate``.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import heapq
import hmac
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
RISK_FUND_NAMES = ("DEPOSIT", "ADVANCE", "CASH_DEPOSIT", "ESTIMATE_ORDER_COST")
BILL_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
    "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
_OUT_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")


class ApiError(Exception):
    """An error answer: HTTP status and WeChat's {"code", "message"}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Fault:
    kind: str  # error | timeout | bad_signature
    status: int = 500
    code: str = "SYSTEM_ERROR"
    message: str = "系统错误"
    after: bool = False  # the effect happens before the fault
    seconds: float = 0.0


@dataclass
class Delivery:
    """One notification as sent (each attempt is logged)."""

    id: str
    event_type: str
    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None
    at: float


@dataclass
class _Outgoing:
    id: str
    event_type: str
    url: str
    body: bytes
    attempt: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def rsa_sign(key: rsa.RSAPrivateKey, message: str) -> str:
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def aes_gcm_encrypt(apiv3_key: str, plaintext: str, associated_data: str) -> dict[str, str]:
    nonce = secrets.token_hex(6)  # 12 characters: the documented nonce is a 12-byte string
    ct = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext.encode(), associated_data.encode())
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "nonce": nonce,
        "associated_data": associated_data,
        "ciphertext": base64.b64encode(ct).decode(),
    }


def self_signed_certificate(key: rsa.RSAPrivateKey, days: int = 30) -> x509.Certificate:
    """A platform certificate for certificate mode (WeChat's are issued by Tenpay's CA)."""
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Tenpay.com Root CA (fake)")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


class WeChatPayFake:
    """The fake WeChat Pay (see module doc). Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        mchid: str,
        appid: str,
        service_id: str,
        merchant_serial_no: str,
        merchant_public_key: rsa.RSAPublicKey,
        platform_private_key: rsa.RSAPrivateKey,
        apiv3_key: str,
        platform_public_key_id: str | None = "PUB_KEY_ID_0112345678902025000000000000",
        platform_certificate: x509.Certificate | None = None,
    ) -> None:
        self.mchid, self.appid, self.service_id = mchid, appid, service_id
        self.merchant_serial_no = merchant_serial_no
        self.merchant_public_key = merchant_public_key
        self.apiv3_key = apiv3_key
        self.platform_key = platform_private_key
        self.platform_public_key_id = None if platform_certificate else platform_public_key_id
        self.certificates: list[tuple[x509.Certificate, rsa.RSAPrivateKey]] = []
        if platform_certificate is not None:
            self.certificates.append((platform_certificate, platform_private_key))
        # behaviour switches
        self.confirm_ttl_s = 30 * 86400.0
        self.max_risk_amount = 99_900
        self.low_score_openids: set[str] = set()
        self.unpayable_openids: set[str] = set()
        self.fee_rate = 0.006
        self.max_sharing_ratio = 0.30
        self.refund_delay_s = 0.0
        self.sharing_delay_s = 0.0
        self.notify_delay_s = 0.0
        self.notify_copies = 1
        self.notify_before_answer = False
        self.notify_timestamp_offset_s = 0.0
        self.notify_apiv3_key: str | None = None  # encrypt notifications under another key
        self.retry_schedule_s: list[float] = [0.05, 0.1, 0.2]
        self.complaint_notify_url: str | None = None
        self.refund_outcomes: list[str] = []  # the next refunds end so (ABNORMAL, CLOSED), then SUCCESS
        self.bill_fault: str | None = None  # "tamper": the file differs from its SHA1; "truncate": rows lost
        self.known_merchants: dict[str, str] = {}  # mchid -> full name, for MERCHANT_ID receivers
        # state
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}  # transaction_id -> payment
        self.refunds: dict[str, dict[str, Any]] = {}  # out_refund_no -> refund
        self.sharings: dict[str, dict[str, Any]] = {}  # out_order_no -> profit sharing order
        self.receivers: dict[tuple[str, str], dict[str, Any]] = {}
        self.complaints: dict[str, dict[str, Any]] = {}
        self.bill_rows: list[dict[str, Any]] = []
        self.bill_files: dict[str, tuple[bytes, float]] = {}
        self.effects: Counter[str] = Counter()
        self.requests: list[tuple[str, str, int]] = []  # (operation, path, status)
        self.deliveries: list[Delivery] = []
        self._faults: dict[str, list[Fault]] = {}
        self._offset = 0.0
        self._seq = itertools.count(1)
        self._lock = threading.RLock()
        self._tasks: list[tuple[float, int, Callable[[], None]]] = []
        self._wake = threading.Condition()
        self._paused: list[_Outgoing] | None = None
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._outbox = threading.local()

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> WeChatPayFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a handler sleeping out a timeout must not hold stop() up
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="wechat-fake-http",
            daemon=True,
        )
        worker = threading.Thread(target=self._run_tasks, name="wechat-fake-tasks", daemon=True)
        self._threads = [serve, worker]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> WeChatPayFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- the test's switches ------------------------------------------------------------------

    def now(self) -> float:
        """The fake's business clock (real time plus :meth:`advance`); signatures use real time."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds
            for order in self.orders.values():
                self._expire_if_due(order)

    def set_time(self, at: float) -> None:
        """Put the business clock at unix time ``at``."""
        with self._lock:
            self._offset = at - time.time()

    def fail_next(
        self,
        operation: str,
        status: int = 500,
        code: str = "SYSTEM_ERROR",
        message: str = "系统错误，请稍后重试",
        after: bool = False,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests of ``operation`` answer ``status``; with ``after`` the
        effect happens first (the answer is lost, the call did take effect)."""
        for _ in range(times):
            self._faults.setdefault(operation, []).append(Fault("error", status, code, message, after))

    def timeout_next(self, operation: str, seconds: float = 1.0, after: bool = True) -> None:
        """The next request of ``operation`` is answered only after ``seconds`` (longer than the
        client's timeout); with ``after`` its effect happens before the delay."""
        self._faults.setdefault(operation, []).append(Fault("timeout", after=after, seconds=seconds))

    def corrupt_signature_next(self, operation: str) -> None:
        """The next answer of ``operation`` is signed over another body (its effect happens)."""
        self._faults.setdefault(operation, []).append(Fault("bad_signature", after=True))

    def pause_notifications(self) -> None:
        with self._wake:
            if self._paused is None:
                self._paused = []

    def release_notifications(self, reverse: bool = False) -> None:
        with self._wake:
            held, self._paused = self._paused or [], None
        for out in reversed(held) if reverse else held:
            self._schedule(0.0, functools.partial(self._attempt, out))

    def count(self, operation: str) -> int:
        """How many times ``operation`` took effect (not counting repeats answered from memory)."""
        return self.effects[operation]

    # --- what renters do in WeChat ---------------------------------------------------------------

    def user_confirm(self, out_order_no: str, openid: str, extra_data: dict[str, str] | None = None) -> bool:
        """The renter confirms in the Pay Score mini program. ``extra_data`` (the adapter's
        ``client_action["extraData"]``) is checked as the mini program does: HMAC-SHA256 over
        the sorted fields and ``key=<APIv3 key>``, and the package of this order. Returns False
        when the renter cannot confirm (low score, order no longer CREATED)."""
        with self._lock:
            order = self.orders[out_order_no]
            self._expire_if_due(order)
            if extra_data is not None:
                fields = {k: v for k, v in extra_data.items() if k != "sign"}
                text = "&".join(f"{k}={fields[k]}" for k in sorted(fields)) + f"&key={self.apiv3_key}"
                expected = (
                    hmac.new(self.apiv3_key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
                )
                if not hmac.compare_digest(expected, extra_data.get("sign", "")):
                    raise ValueError("the mini program refuses: sign does not match")
                if fields.get("package") != order["package"] or fields.get("mch_id") != self.mchid:
                    raise ValueError("the mini program refuses: package or mch_id of another order")
            if order["state"] != "CREATED" or openid in self.low_score_openids:
                return False
            order.update(state="DOING", state_description="USER_CONFIRM", openid=openid)
            self._notify(
                order["notify_url"], "PAYSCORE.USER_CONFIRM", "payscore", self._view(order), "用户确认"
            )
        return True

    def user_opens_business_view(self, business_type: str, extra_data: dict[str, str], openid: str) -> bool:
        """The renter's phone calls ``wx.openBusinessView({businessType, extraData})`` with what the
        merchant gave it (the adapter's ``client_action``) and confirms in the Pay Score mini program.
        The phone knows no ``out_order_no``: WeChat finds the service order by the ``package`` of
        ``extraData``, then checks and confirms as :meth:`user_confirm`."""
        if business_type != "wxpayScoreUse":
            raise ValueError(f"wx.openBusinessView: businessType {business_type!r} is not wxpayScoreUse")
        with self._lock:
            package = extra_data.get("package")
            no = next((o["out_order_no"] for o in self.orders.values() if o["package"] == package), None)
            if no is None:
                raise ValueError("the mini program refuses: no service order has this package")
            return self.user_confirm(no, openid, extra_data)

    def collect(self, out_order_no: str) -> None:
        """The renter pays a collection that had failed (e.g. topped up their balance)."""
        with self._lock:
            order = self.orders[out_order_no]
            assert order["collection"]["state"] == "USER_PAYING", order["collection"]
            self._collect(order)

    def open_complaint(
        self, out_order_no: str, amount: int | None = None, detail: str = "充电宝已归还仍扣费"
    ) -> str:
        """A renter complains about the order's payment (消费者投诉); returns the complaint id."""
        with self._lock:
            order = self.orders[out_order_no]
            payment = self.payments[order["transaction_id"]]
            cid = f"2002018{next(self._seq):020d}"
            self.complaints[cid] = {
                "complaint_id": cid,
                "complaint_time": self._iso(self.now()),
                "complaint_detail": detail,
                "complaint_state": "PENDING",
                "complainted_mchid": self.mchid,
                "payer_openid": order.get("openid"),
                "complaint_order_info": [
                    {
                        "transaction_id": payment["transaction_id"],
                        "out_trade_no": payment["out_trade_no"],
                        "amount": payment["amount"],
                    }
                ],
                "service_order_info": [
                    {"order_id": order["order_id"], "out_order_no": out_order_no, "state": order["state"]}
                ],
                "complaint_full_refunded": False,
                "incoming_user_response": False,
                "problem_description": detail,
                "user_complaint_times": 1,
                "problem_type": "REFUND",
                "apply_refund_amount": payment["amount"] if amount is None else amount,
            }
            self._notify_complaint(cid, "COMPLAINT.CREATE", "CREATE_COMPLAINT")
        return cid

    def resolve_complaint(self, complaint_id: str, refunded: bool) -> None:
        with self._lock:
            c = self.complaints[complaint_id]
            c.update(complaint_state="PROCESSED", complaint_full_refunded=refunded)
            action = "REFUND_SUCCESS" if refunded else "MERCHANT_CONFIRM_COMPLETE"
            self._notify_complaint(complaint_id, "COMPLAINT.STATE_CHANGE", action)

    def rotate_platform_key(
        self, key: rsa.RSAPrivateKey, certificate: x509.Certificate | None = None
    ) -> None:
        """Sign with a new platform key from now on (certificate mode: the new certificate joins
        the list ``/v3/certificates`` serves, the old one stays)."""
        with self._lock:
            self.platform_key = key
            if certificate is not None:
                self.certificates.append((certificate, key))

    # --- HTTP ------------------------------------------------------------------------------------

    _ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
        ("POST", re.compile(r"/v3/payscore/serviceorder"), "create"),
        ("GET", re.compile(r"/v3/payscore/serviceorder"), "query"),
        ("POST", re.compile(r"/v3/payscore/serviceorder/(?P<no>[^/]+)/complete"), "complete"),
        ("POST", re.compile(r"/v3/payscore/serviceorder/(?P<no>[^/]+)/cancel"), "cancel"),
        ("POST", re.compile(r"/v3/refund/domestic/refunds"), "refund"),
        ("GET", re.compile(r"/v3/refund/domestic/refunds/(?P<no>[^/]+)"), "refund_query"),
        ("GET", re.compile(r"/v3/bill/tradebill"), "tradebill"),
        ("GET", re.compile(r"/v3/billdownload/file"), "billdownload"),
        ("POST", re.compile(r"/v3/profitsharing/orders"), "profitsharing"),
        ("GET", re.compile(r"/v3/profitsharing/orders/(?P<no>[^/]+)"), "profitsharing_query"),
        ("POST", re.compile(r"/v3/profitsharing/receivers/add"), "receivers_add"),
        ("GET", re.compile(r"/v3/merchant-service/complaints-v2/(?P<no>[^/]+)"), "complaint"),
        ("GET", re.compile(r"/v3/certificates"), "certificates"),
    )

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        route = next(
            ((op, m) for verb, rx, op in self._ROUTES if verb == method and (m := rx.fullmatch(split.path))),
            None,
        )
        if route is None:
            self._answer(
                h, "unknown", 404, {"code": "RESOURCE_NOT_EXISTS", "message": f"no {method} {split.path}"}
            )
            return
        op, match = route
        try:
            self._verify_request(method, h.path, raw, h.headers.get("Authorization"))
        except ApiError as e:
            self._answer(h, op, e.status, {"code": e.code, "message": e.message})
            return
        fault = self._faults[op].pop(0) if self._faults.get(op) else None
        if fault is not None and not fault.after:
            if fault.kind == "timeout":
                time.sleep(fault.seconds)
                self._answer(h, op, 504, {"code": "SYSTEM_ERROR", "message": "超时"})
                return
            self._answer(h, op, fault.status, {"code": fault.code, "message": fault.message})
            return
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._answer(h, op, 400, {"code": "PARAM_ERROR", "message": "请求体不是JSON"})
            return
        self._outbox.items = []
        try:
            with self._lock:
                status, out = 200, getattr(self, f"_op_{op}")(body, query, match.groupdict(), h)
        except ApiError as e:
            status, out = e.status, {"code": e.code, "message": e.message}
        outgoing: list[_Outgoing] = self._outbox.items
        self._outbox.items = None
        for item in outgoing:  # the notifications this request caused
            self._send_later(item)
        if self.notify_before_answer:
            for item in outgoing:
                item.done.wait(5)
        if fault is not None:
            if fault.kind == "timeout":
                time.sleep(fault.seconds)
            elif fault.kind == "error":
                status, out = fault.status, {"code": fault.code, "message": fault.message}
        self._answer(h, op, status, out, corrupt=fault is not None and fault.kind == "bad_signature")

    def _answer(
        self, h: BaseHTTPRequestHandler, op: str, status: int, out: Any, corrupt: bool = False
    ) -> None:
        self.requests.append((op, h.path, status))
        if isinstance(out, bytes):  # the bill file: not signed (documented)
            body, headers = out, {"Content-Type": "application/octet-stream"}
        else:
            body = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                **self._signature_headers(body, corrupt),
            }
        headers["Request-ID"] = str(uuid.uuid4())
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout the test asked for)

    def _signature_headers(self, body: bytes, corrupt: bool = False, offset_s: float = 0.0) -> dict[str, str]:
        ts = str(int(time.time() + offset_s))
        nonce = secrets.token_hex(16)
        signed = body + b"tampered" if corrupt else body
        return {
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": rsa_sign(self.platform_key, f"{ts}\n{nonce}\n{signed.decode()}\n"),
            "Wechatpay-Serial": self._platform_serial(),
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }

    def _platform_serial(self) -> str:
        if self.platform_public_key_id:
            return self.platform_public_key_id
        cert = next(c for c, k in self.certificates if k is self.platform_key)
        return format(cert.serial_number, "X")

    def _verify_request(self, method: str, path: str, raw: bytes, auth: str | None) -> None:
        scheme = SIGNATURE_TYPE + " "
        if not auth or not auth.startswith(scheme):
            raise ApiError(401, "SIGN_ERROR", "Authorization 缺失或认证类型不正确")
        params = dict(re.findall(r'(\w+)="([^"]*)"', auth[len(scheme) :]))
        for name in ("mchid", "nonce_str", "signature", "timestamp", "serial_no"):
            if not params.get(name):
                raise ApiError(401, "SIGN_ERROR", f"Authorization 缺少 {name}")
        if params["mchid"] != self.mchid:
            raise ApiError(401, "SIGN_ERROR", "商户号与签名不匹配")
        if params["serial_no"] != self.merchant_serial_no:
            raise ApiError(401, "SIGN_ERROR", "商户证书序列号有误")
        if not params["timestamp"].isdigit() or abs(time.time() - int(params["timestamp"])) > 300:
            raise ApiError(401, "SIGN_ERROR", "请求时间戳与当前时间相差超过5分钟")
        message = f"{method}\n{path}\n{params['timestamp']}\n{params['nonce_str']}\n{raw.decode()}\n"
        try:
            self.merchant_public_key.verify(
                base64.b64decode(params["signature"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError) as e:
            raise ApiError(401, "SIGN_ERROR", "签名错误") from e

    # --- Pay Score ---------------------------------------------------------------------------

    def _op_create(self, body: dict[str, Any], query: dict[str, str], path: dict[str, str], h: Any) -> Any:
        for name in (
            "out_order_no",
            "appid",
            "service_id",
            "service_introduction",
            "time_range",
            "risk_fund",
        ):
            if not body.get(name):
                raise ApiError(400, "PARAM_ERROR", f"缺少参数 {name}")
        if not body.get("notify_url"):
            raise ApiError(400, "PARAM_ERROR", "缺少参数 notify_url")
        no = body["out_order_no"]
        if not isinstance(no, str) or not _OUT_NO.fullmatch(no):
            raise ApiError(400, "PARAM_ERROR", "out_order_no 格式错误")
        if body["appid"] != self.appid:
            raise ApiError(400, "INVALID_REQUEST", "appid与mchid不匹配")
        if body["service_id"] != self.service_id:
            raise ApiError(403, "NO_AUTH", "商户无此服务ID的权限")
        if len(body["service_introduction"]) > 20:
            raise ApiError(400, "PARAM_ERROR", "service_introduction 超过20个字符")
        risk = body["risk_fund"]
        if risk.get("name") not in RISK_FUND_NAMES:
            raise ApiError(400, "PARAM_ERROR", "risk_fund.name 不合法")
        if not isinstance(risk.get("amount"), int) or isinstance(risk["amount"], bool) or risk["amount"] <= 0:
            raise ApiError(400, "PARAM_ERROR", "risk_fund.amount 必须为正整数")
        start = (body["time_range"] or {}).get("start_time", "")
        if start != "OnAccept" and not re.fullmatch(r"\d{8}(\d{6})?", str(start)):
            raise ApiError(400, "PARAM_ERROR", "time_range.start_time 格式错误")
        if body.get("need_user_confirm", True) is not True:
            raise ApiError(403, "NO_AUTH", "本服务仅支持需确认模式")
        if body.get("openid"):
            raise ApiError(400, "PARAM_ERROR", "需确认模式不填写 openid")
        fingerprint = json.dumps(body, sort_keys=True)
        if no in self.orders:
            order = self.orders[no]
            if order["fingerprint"] != fingerprint:
                raise ApiError(400, "INVALID_REQUEST", "重入参数与首次请求不一致")
            self._expire_if_due(order)
            return {**self._view(order), "package": order["package"]}
        if risk["amount"] > self.max_risk_amount:
            raise ApiError(403, "RULE_LIMIT", f"风险金额超过服务上限 {self.max_risk_amount}")
        order = {
            "out_order_no": no,
            "fingerprint": fingerprint,
            "service_introduction": body["service_introduction"],
            "risk_fund": dict(risk),
            "time_range": dict(body["time_range"]),
            "attach": body.get("attach"),
            "notify_url": body["notify_url"],
            "state": "CREATED",
            "state_description": None,
            "created_at": self.now(),
            "order_id": f"1000000000{next(self._seq):012d}",
            "package": "DEPOSIT" + secrets.token_urlsafe(24),
            "openid": None,
            "post_payments": None,
            "total_amount": None,
            "complete_fingerprint": None,
            "profit_sharing": False,
            "collection": None,
            "transaction_id": None,
        }
        self.orders[no] = order
        self.effects["create"] += 1
        return {**self._view(order), "package": order["package"]}

    def _op_query(self, body: Any, query: dict[str, str], path: dict[str, str], h: Any) -> Any:
        if query.get("service_id") != self.service_id or query.get("appid") != self.appid:
            raise ApiError(400, "PARAM_ERROR", "service_id 或 appid 错误")
        order = self._order(query.get("out_order_no", ""))
        return self._view(order)

    def _op_complete(self, body: dict[str, Any], query: Any, path: dict[str, str], h: Any) -> Any:
        order = self._order(path["no"])
        if body.get("appid") != self.appid or body.get("service_id") != self.service_id:
            raise ApiError(400, "PARAM_ERROR", "appid 或 service_id 与创单不一致")
        items = body.get("post_payments")
        total = body.get("total_amount")
        if not items or not isinstance(total, int):
            raise ApiError(400, "PARAM_ERROR", "缺少 post_payments 或 total_amount")
        discounts = sum(int(d.get("amount", 0)) for d in body.get("post_discounts") or [])
        if sum(int(p.get("amount", 0)) for p in items) - discounts != total:
            raise ApiError(400, "PARAM_ERROR", "total_amount 不等于后付费项目金额之和减优惠")
        fingerprint = json.dumps(body, sort_keys=True)
        if order["complete_fingerprint"] is not None:
            if order["complete_fingerprint"] == fingerprint:
                return self._complete_view(order)
            raise ApiError(400, "INVALID_REQUEST", "订单已完结，重入参数与首次请求不一致")
        if order["state"] == "EXPIRED":
            raise ApiError(400, "INVALID_REQUEST", "订单已失效")
        if order["state"] != "DOING" or order["state_description"] != "USER_CONFIRM":
            raise ApiError(400, "INVALID_REQUEST", f"订单状态 {order['state']} 不能完结：需用户确认后进行中")
        if total > order["risk_fund"]["amount"]:
            raise ApiError(400, "INVALID_REQUEST", "total_amount 超过订单风险金额")
        order.update(
            state_description="MCH_COMPLETE",
            post_payments=[dict(p) for p in items],
            total_amount=total,
            complete_fingerprint=fingerprint,
            profit_sharing=bool(body.get("profit_sharing")),
        )
        self.effects["complete"] += 1
        if total == 0:
            order.update(state="DONE", state_description=None)
        else:
            order["collection"] = {
                "state": "USER_PAYING",
                "total_amount": total,
                "paying_amount": total,
                "paid_amount": 0,
            }
            if order["openid"] not in self.unpayable_openids:
                self._collect(order)
        return self._complete_view(order)

    def _op_cancel(self, body: dict[str, Any], query: Any, path: dict[str, str], h: Any) -> Any:
        order = self._order(path["no"])
        if body.get("appid") != self.appid or body.get("service_id") != self.service_id:
            raise ApiError(400, "PARAM_ERROR", "appid 或 service_id 与创单不一致")
        reason = body.get("reason")
        if not reason or len(reason) > 30:
            raise ApiError(400, "PARAM_ERROR", "reason 缺失或超过30个字符")
        if order["state"] == "REVOKED":
            if order.get("cancel_reason") != reason:
                raise ApiError(400, "INVALID_REQUEST", "订单已取消，重入参数与首次请求不一致")
        elif order["state"] == "CREATED" or (
            order["state"] == "DOING" and order["state_description"] == "USER_CONFIRM"
        ):
            order.update(state="REVOKED", state_description=None, cancel_reason=reason)
            self.effects["cancel"] += 1
        else:
            raise ApiError(400, "INVALID_REQUEST", f"订单状态 {order['state']} 不能取消")
        return {
            "appid": self.appid,
            "mchid": self.mchid,
            "out_order_no": order["out_order_no"],
            "service_id": self.service_id,
            "order_id": order["order_id"],
        }

    def _collect(self, order: dict[str, Any]) -> None:
        total = order["total_amount"]
        transaction_id = f"4200{next(self._seq):024d}"
        paid_at = self.now()
        order["transaction_id"] = transaction_id
        order["collection"] = {
            "state": "USER_PAID",
            "total_amount": total,
            "paying_amount": 0,
            "paid_amount": total,
            "details": [
                {
                    "seq": 1,
                    "amount": total,
                    "paid_type": "NEWTON",
                    "paid_time": datetime.fromtimestamp(paid_at, BEIJING).strftime("%Y%m%d%H%M%S"),
                    "transaction_id": transaction_id,
                }
            ],
        }
        order.update(state="DONE", state_description=None)
        self.payments[transaction_id] = {
            "transaction_id": transaction_id,
            "out_trade_no": order["out_order_no"],
            "out_order_no": order["out_order_no"],
            "amount": total,
            "refunded": 0,
            "shared": 0,
            "unfrozen": False,
            "profit_sharing": order["profit_sharing"],
            "openid": order["openid"],
            "attach": order["attach"],
            "paid_at": paid_at,
        }
        self.effects["collect"] += 1
        self.bill_rows.append({"kind": "payment", "at": paid_at, "payment": transaction_id})
        resource = {**self._view(order), "out_trade_no": order["out_order_no"]}
        self._notify(order["notify_url"], "PAYSCORE.USER_PAID", "payscore", resource, "用户支付成功")

    def _view(self, order: dict[str, Any]) -> dict[str, Any]:
        self._expire_if_due(order)
        view: dict[str, Any] = {
            "out_order_no": order["out_order_no"],
            "service_id": self.service_id,
            "appid": self.appid,
            "mchid": self.mchid,
            "service_introduction": order["service_introduction"],
            "state": order["state"],
            "risk_fund": order["risk_fund"],
            "time_range": order["time_range"],
            "notify_url": order["notify_url"],
            "order_id": order["order_id"],
            "need_collection": order["collection"] is not None,
        }
        if order["state"] == "DOING":
            view["state_description"] = order["state_description"]
        for name in ("attach", "openid", "post_payments", "total_amount", "collection"):
            if order[name] is not None:
                view[name] = order[name]
        return view

    def _complete_view(self, order: dict[str, Any]) -> dict[str, Any]:
        return {
            "appid": self.appid,
            "mchid": self.mchid,
            "out_order_no": order["out_order_no"],
            "service_id": self.service_id,
            "service_introduction": order["service_introduction"],
            "state": "DOING",  # as answered at completion (the collection may already have run)
            "state_description": "MCH_COMPLETE",
            "total_amount": order["total_amount"],
            "post_payments": order["post_payments"],
            "risk_fund": order["risk_fund"],
            "order_id": order["order_id"],
            "need_collection": order["total_amount"] > 0,
        }

    def _order(self, no: str) -> dict[str, Any]:
        order = self.orders.get(no)
        if order is None:
            raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
        self._expire_if_due(order)
        return order

    def _expire_if_due(self, order: dict[str, Any]) -> None:
        if order["state"] == "CREATED" and self.now() >= order["created_at"] + self.confirm_ttl_s:
            order["state"] = "EXPIRED"
            self.effects["expire"] += 1

    # --- refunds ---------------------------------------------------------------------------------

    def _op_refund(self, body: dict[str, Any], query: Any, path: Any, h: Any) -> Any:
        no = body.get("out_refund_no")
        amount = body.get("amount") or {}
        if not isinstance(no, str) or not _OUT_REFUND_NO.fullmatch(no):
            raise ApiError(400, "PARAM_ERROR", "out_refund_no 格式错误")
        if (
            not all(isinstance(amount.get(k), int) for k in ("refund", "total"))
            or amount.get("currency") != "CNY"
        ):
            raise ApiError(400, "PARAM_ERROR", "amount 需要 refund、total 与 currency=CNY")
        payment = self.payments.get(body.get("transaction_id", ""))
        if payment is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        fingerprint = json.dumps(body, sort_keys=True)
        if no in self.refunds:
            if self.refunds[no]["fingerprint"] != fingerprint:
                raise ApiError(400, "INVALID_REQUEST", "退款单号已存在，重入参数与首次请求不一致")
            return self._refund_view(self.refunds[no])
        if amount["total"] != payment["amount"]:
            raise ApiError(400, "INVALID_REQUEST", "订单金额与原订单不一致")
        if not 0 < amount["refund"] <= payment["amount"] - payment["refunded"]:
            raise ApiError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        refund = {
            "fingerprint": fingerprint,
            "refund_id": f"50{next(self._seq):026d}",
            "out_refund_no": no,
            "transaction_id": payment["transaction_id"],
            "out_trade_no": payment["out_trade_no"],
            "status": "PROCESSING",
            "create_time": self._iso(self.now()),
            "created_at": self.now(),
            "success_time": None,
            "refund": amount["refund"],
            "total": payment["amount"],
            "notify_url": body.get("notify_url"),
        }
        self.refunds[no] = refund
        payment["refunded"] += amount["refund"]
        self.effects["refund"] += 1
        self.bill_rows.append({"kind": "refund", "at": refund["created_at"], "refund": no})
        self._schedule(self.refund_delay_s, lambda: self._finish_refund(no))
        return self._refund_view(refund)

    def _finish_refund(self, no: str) -> None:
        with self._lock:
            refund = self.refunds[no]
            outcome = self.refund_outcomes.pop(0) if self.refund_outcomes else "SUCCESS"
            refund.update(
                status=outcome, success_time=self._iso(self.now()) if outcome == "SUCCESS" else None
            )
            if outcome != "SUCCESS":  # the money did not go back (ABNORMAL: the renter's account is closed)
                self.payments[refund["transaction_id"]]["refunded"] -= refund["refund"] * (
                    outcome == "CLOSED"
                )
            if refund["notify_url"]:
                resource = {
                    "mchid": self.mchid,
                    "out_trade_no": refund["out_trade_no"],
                    "transaction_id": refund["transaction_id"],
                    "out_refund_no": no,
                    "refund_id": refund["refund_id"],
                    "refund_status": outcome,
                    "success_time": refund["success_time"],
                    "user_received_account": "支付用户零钱",
                    "amount": {
                        "total": refund["total"],
                        "refund": refund["refund"],
                        "payer_total": refund["total"],
                        "payer_refund": refund["refund"],
                    },
                }
                self._notify(refund["notify_url"], f"REFUND.{outcome}", "refund", resource, "退款结果")

    def _op_refund_query(self, body: Any, query: Any, path: dict[str, str], h: Any) -> Any:
        refund = self.refunds.get(path["no"])
        if refund is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return self._refund_view(refund)

    def _refund_view(self, r: dict[str, Any]) -> dict[str, Any]:
        view = {
            "refund_id": r["refund_id"],
            "out_refund_no": r["out_refund_no"],
            "transaction_id": r["transaction_id"],
            "out_trade_no": r["out_trade_no"],
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": r["create_time"],
            "status": r["status"],
            "amount": {
                "total": r["total"],
                "refund": r["refund"],
                "payer_total": r["total"],
                "payer_refund": r["refund"],
                "settlement_total": r["total"],
                "settlement_refund": r["refund"],
                "discount_refund": 0,
                "currency": "CNY",
            },
        }
        if r["success_time"]:
            view["success_time"] = r["success_time"]
        return view

    # --- the trade bill ------------------------------------------------------------------------

    def _op_tradebill(self, body: Any, query: dict[str, str], path: Any, h: Any) -> Any:
        try:
            day = datetime.strptime(query.get("bill_date", ""), "%Y-%m-%d").date()
        except ValueError as e:
            raise ApiError(400, "PARAM_ERROR", "bill_date 格式应为 yyyy-MM-DD") from e
        if query.get("bill_type", "ALL") != "ALL":
            raise ApiError(400, "PARAM_ERROR", "本假服务只提供 ALL 账单")
        rows = [r for r in self.bill_rows if datetime.fromtimestamp(r["at"], BEIJING).date() == day]
        if not rows:
            raise ApiError(400, "NO_STATEMENT_EXIST", "当前日期的账单不存在")
        text = self.bill_text(rows)
        if self.bill_fault == "truncate":  # a file cut short (its hash is of what is served)
            text = "\r\n".join(line for i, line in enumerate(text.split("\r\n")) if i != len(rows))
        content = text.encode("utf-8")
        if query.get("tar_type") == "GZIP":
            content = gzip.compress(content)
        digest = hashlib.sha1(content).hexdigest()
        if self.bill_fault == "tamper":
            content = content[:-1] + bytes([content[-1] ^ 1])
        token = secrets.token_urlsafe(16)
        self.bill_files[token] = (content, time.time() + 30)  # the link lives 30 s
        return {
            "hash_type": "SHA1",
            "hash_value": digest,
            "download_url": f"{self.base_url}/v3/billdownload/file?token={token}",
        }

    def _op_billdownload(self, body: Any, query: dict[str, str], path: Any, h: Any) -> Any:
        file = self.bill_files.get(query.get("token", ""))
        if file is None or file[1] < time.time():
            raise ApiError(400, "INVALID_REQUEST", "下载链接无效或已过期")
        return file[0]

    def bill_text(self, rows: list[dict[str, Any]]) -> str:
        """The ALL bill of ``rows``: header, "`"-prefixed details, summary header and totals."""
        lines = [BILL_COLUMNS]
        paid = refunded = asked = 0
        fees = 0.0
        for r in rows:
            if r["kind"] == "payment":
                p = self.payments[r["payment"]]
                fee = round(p["amount"] * self.fee_rate / 100, 5)
                values = self._bill_values(p, r["at"], "SUCCESS")
                values[12] = yuan(p["amount"])
                values[22] = f"{fee:.5f}"
                paid += p["amount"]
            else:
                refund = self.refunds[r["refund"]]
                p = self.payments[refund["transaction_id"]]
                fee = -round(refund["refund"] * self.fee_rate / 100, 5)
                values = self._bill_values(p, r["at"], "REFUND")
                values[12] = yuan(p["amount"])
                values[14], values[15] = refund["refund_id"], refund["out_refund_no"]
                values[16] = yuan(refund["refund"])
                values[18], values[19] = "ORIGINAL", refund["status"]
                values[22] = f"{fee:.5f}"
                values[25] = yuan(refund["refund"])
                refunded += refund["refund"]
                asked += refund["refund"]
            fees += fee
            lines.append("`" + ",`".join(values))
        lines.append(BILL_SUMMARY)
        totals = [str(len(rows)), yuan(paid), yuan(refunded), "0.00", f"{fees:.5f}", yuan(paid), yuan(asked)]
        lines.append("`" + ",`".join(totals))
        return "\r\n".join(lines) + "\r\n"

    def _bill_values(self, p: dict[str, Any], at: float, status: str) -> list[str]:
        when = datetime.fromtimestamp(at, BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        order = self.orders[p["out_order_no"]]
        return [
            when, self.appid, self.mchid, "0", "", p["transaction_id"], p["out_trade_no"], p["openid"] or "",
            "PAYSCORE", status, "OTHERS", "CNY", "0.00", "0.00", "0", "0", "0.00", "0.00", "", "",
            order["service_introduction"], p["attach"] or "", "0.00000", f"{self.fee_rate * 100:.2f}%",
            yuan(p["amount"]), "0.00", "",
        ]  # fmt: skip

    # --- profit sharing ------------------------------------------------------------------------

    def _op_receivers_add(
        self, body: dict[str, Any], query: Any, path: Any, h: BaseHTTPRequestHandler
    ) -> Any:
        if body.get("appid") != self.appid:
            raise ApiError(400, "PARAM_ERROR", "appid 错误")
        kind, account = body.get("type"), body.get("account")
        if kind not in ("MERCHANT_ID", "PERSONAL_OPENID") or not account:
            raise ApiError(400, "PARAM_ERROR", "type 或 account 错误")
        name = None
        if body.get("name"):
            if h.headers.get("Wechatpay-Serial") != self._platform_serial():
                raise ApiError(400, "PARAM_ERROR", "Wechatpay-Serial 与加密所用的平台公钥不一致")
            try:
                name = self.platform_key.decrypt(
                    base64.b64decode(body["name"]),
                    padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
                ).decode()
            except ValueError as e:
                raise ApiError(400, "PARAM_ERROR", "name 解密失败") from e
        if kind == "MERCHANT_ID" and self.known_merchants.get(account) != name:
            raise ApiError(400, "INVALID_REQUEST", "分账接收方全称与商户号不匹配")
        self.receivers[(kind, account)] = {
            "type": kind,
            "account": account,
            "relation_type": body.get("relation_type"),
        }
        self.effects["receivers_add"] += 1
        return {"type": kind, "account": account, "relation_type": body.get("relation_type")}

    def _op_profitsharing(self, body: dict[str, Any], query: Any, path: Any, h: Any) -> Any:
        no = body.get("out_order_no")
        if body.get("appid") != self.appid:
            raise ApiError(400, "PARAM_ERROR", "appid 错误")
        if not isinstance(no, str) or not re.fullmatch(r"[0-9A-Za-z_\-|*@]{1,64}", no):
            raise ApiError(400, "PARAM_ERROR", "out_order_no 格式错误")
        payment = self.payments.get(body.get("transaction_id", ""))
        if payment is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        fingerprint = json.dumps(body, sort_keys=True)
        if no in self.sharings:
            if self.sharings[no]["fingerprint"] != fingerprint:
                raise ApiError(400, "INVALID_REQUEST", "分账单号已存在，重入参数与首次请求不一致")
            return self._sharing_view(self.sharings[no])
        if not payment["profit_sharing"]:
            raise ApiError(400, "INVALID_REQUEST", "该笔订单完结时未设置分账标记")
        if payment["unfrozen"]:
            raise ApiError(400, "INVALID_REQUEST", "订单剩余资金已解冻，不能再分账")
        receivers = body.get("receivers") or []
        for r in receivers:
            if (r.get("type"), r.get("account")) not in self.receivers:
                raise ApiError(400, "INVALID_REQUEST", f"分账接收方 {r.get('account')} 未添加")
            if not isinstance(r.get("amount"), int) or r["amount"] <= 0 or not r.get("description"):
                raise ApiError(400, "PARAM_ERROR", "分账金额或描述错误")
        total = sum(r["amount"] for r in receivers)
        if payment["shared"] + total > int(payment["amount"] * self.max_sharing_ratio):
            raise ApiError(400, "INVALID_REQUEST", "分账金额超出最大分账比例")
        sharing = {
            "fingerprint": fingerprint,
            "out_order_no": no,
            "order_id": f"3008450740{next(self._seq):018d}",
            "transaction_id": payment["transaction_id"],
            "state": "PROCESSING",
            "receivers": [
                {
                    "type": r["type"],
                    "account": r["account"],
                    "amount": r["amount"],
                    "description": r["description"],
                    "result": "PENDING",
                    "fail_reason": "",
                    "detail_id": f"3600{next(self._seq):024d}",
                    "create_time": self._iso(self.now()),
                    "finish_time": "",
                }
                for r in receivers
            ],
        }
        payment["shared"] += total
        payment["unfrozen"] = bool(body.get("unfreeze_unsplit"))
        self.sharings[no] = sharing
        self.effects["profitsharing"] += 1
        self._schedule(self.sharing_delay_s, lambda: self._finish_sharing(no))
        return self._sharing_view(sharing)

    def _finish_sharing(self, no: str) -> None:
        with self._lock:
            sharing = self.sharings[no]
            sharing["state"] = "FINISHED"
            for r in sharing["receivers"]:
                r.update(result="SUCCESS", finish_time=self._iso(self.now()))

    def _op_profitsharing_query(self, body: Any, query: dict[str, str], path: dict[str, str], h: Any) -> Any:
        sharing = self.sharings.get(path["no"])
        if sharing is None or sharing["transaction_id"] != query.get("transaction_id"):
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "分账单不存在")
        return self._sharing_view(sharing)

    def _sharing_view(self, s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k != "fingerprint"}

    # --- complaints and certificates --------------------------------------------------------------

    def _op_complaint(self, body: Any, query: Any, path: dict[str, str], h: Any) -> Any:
        c = self.complaints.get(path["no"])
        if c is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "投诉单不存在")
        return dict(c)

    def _notify_complaint(self, complaint_id: str, event_type: str, action_type: str) -> None:
        if self.complaint_notify_url:
            resource = {"complaint_id": complaint_id, "action_type": action_type}
            self._notify(self.complaint_notify_url, event_type, "complaint", resource, "投诉通知")

    def _op_certificates(self, body: Any, query: Any, path: Any, h: Any) -> Any:
        if not self.certificates:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "本商户使用微信支付公钥模式，无平台证书")
        data = []
        for cert, _key in self.certificates:
            pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            data.append(
                {
                    "serial_no": format(cert.serial_number, "X"),
                    "effective_time": self._iso(cert.not_valid_before_utc.timestamp()),
                    "expire_time": self._iso(cert.not_valid_after_utc.timestamp()),
                    "encrypt_certificate": aes_gcm_encrypt(self.apiv3_key, pem, "certificate"),
                }
            )
        return {"data": data}

    # --- notifications and timed work -----------------------------------------------------------

    def _notify(
        self, url: str, event_type: str, original_type: str, resource: dict[str, Any], summary: str
    ) -> None:
        key = self.notify_apiv3_key or self.apiv3_key
        plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
        envelope: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "create_time": self._iso(self.now()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {"original_type": original_type, **aes_gcm_encrypt(key, plaintext, original_type)},
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        for _ in range(max(1, self.notify_copies)):
            item = _Outgoing(envelope["id"], event_type, url, body)
            outbox = getattr(self._outbox, "items", None)
            if outbox is not None:
                outbox.append(item)  # sent when the request that caused it is handled
            else:
                self._send_later(item)

    def _send_later(self, item: _Outgoing) -> None:
        self._schedule(self.notify_delay_s, lambda: self._attempt(item))

    def _attempt(self, item: _Outgoing) -> None:
        with self._wake:
            if self._paused is not None:
                self._paused.append(item)
                return
        headers = {"Content-Type": "application/json", "Request-ID": str(uuid.uuid4())}
        headers.update(self._signature_headers(item.body, offset_s=self.notify_timestamp_offset_s))
        status: int | None
        try:
            status = requests.post(item.url, data=item.body, headers=headers, timeout=5).status_code
        except requests.RequestException:
            status = None
        self.deliveries.append(
            Delivery(item.id, item.event_type, item.url, item.body, headers, status, time.time())
        )
        item.done.set()
        if (status is None or not 200 <= status < 300) and item.attempt < len(self.retry_schedule_s):
            delay = self.retry_schedule_s[item.attempt]
            item.attempt += 1
            self._schedule(delay, lambda: self._attempt(item))

    def _schedule(self, delay: float, task: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._tasks, (time.monotonic() + delay, next(self._seq), task))
            self._wake.notify_all()

    def _run_tasks(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._tasks or self._tasks[0][0] > time.monotonic()):
                    self._wake.wait(
                        None if not self._tasks else max(0.0, self._tasks[0][0] - time.monotonic())
                    )
                if self._stopping:
                    return
                _, _, task = heapq.heappop(self._tasks)
            task()

    def _iso(self, at: float) -> str:
        return datetime.fromtimestamp(at, BEIJING).isoformat(timespec="seconds")
