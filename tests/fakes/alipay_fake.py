"""A local fake of the Alipay open platform gateway for fund authorization (资金预授权, credit 免押).

It implements, on 127.0.0.1 and a free port, the published endpoints the adapter
``cloud/payments/alipay_provider.py`` uses, with the signatures Alipay documents, and plays
Alipay's failure modes. The pages it follows (opendocs.alipay.com ids as the go-pay/gopay SDK
cites them; their text read through mirrors and excerpts, 2026-12: the 预授权支付 接入指南 page
says "更新时间 2025-07-17"; the Java SDK model AlipayFundAuthOperationDetailQueryResponse, whose
fields and order states the fake answers, is "2024-04-23"; trade error sub_codes as listed by
the Bishoptylaor/paypay SDK):

- RSA2 signing and verification ("OpenAPI 2.0 签名", 自行实现签名):
  https://opendocs.alipay.com/common/02kf5q ; public error codes: https://opendocs.alipay.com/common/02km9f
- alipay.fund.auth.order.app.freeze (线上资金授权冻结, an order string the renter's Alipay app
  submits; 免押 through ``extra_param`` {"category", "serviceId"}; ``timeout_express``):
  https://opendocs.alipay.com/open/02f912 (https://opendocs.alipay.com/open/02fkb9 is the offline
  alipay.fund.auth.order.freeze)
- alipay.fund.auth.order.unfreeze: https://opendocs.alipay.com/open/02fkbc
- alipay.fund.auth.operation.detail.query: https://opendocs.alipay.com/open/02fkbd
- alipay.fund.auth.operation.cancel: https://opendocs.alipay.com/open/02fkbb
- alipay.trade.pay (授权转支付, product_code PREAUTH_PAY, auth_no, auth_confirm_mode COMPLETE):
  https://opendocs.alipay.com/open/02cdx8 ; alipay.trade.query, alipay.trade.fastpay.refund.query
- alipay.trade.refund: https://opendocs.alipay.com/open/02e7go
- alipay.trade.order.settle: https://opendocs.alipay.com/open/02j2bt ; .settle.query: /open/02pj6l
- alipay.data.dataservice.bill.downloadurl.query: https://opendocs.alipay.com/open/02e7gr (a URL,
  valid 30 s, to a zip of GBK CSV files: for bill_type ``trade`` the 业务明细 detail file and its
  汇总 summary; for ``signcustomer`` the 账务明细 account bill, whose 分账 rows are written with
  业务流水号 = the settle_no, an assumption the pages do not settle)
- asynchronous notifications: a form POST to notify_url, signed over every parameter but
  ``sign`` and ``sign_type``, delivered again until the answer's body is exactly ``success``
  (https://opendocs.alipay.com/open/270/105898); the fund-auth types ``fund_auth_freeze``,
  ``fund_auth_unfreeze`` (also when the authorization times out and Alipay unfreezes it, sent to
  the app gateway address) and ``trade_status_sync`` for the payment, as the 预授权 异步通知 page
  lists them (mirror: https://www.apifox.cn/apidoc/docs-site/3618910/doc-3288608).

Not found in those pages, so chosen here: the fund-auth refusals other than AUTH_ORDER_NOT_EXIST,
AUTH_OPERATION_NOT_EXIST and ILLEGAL_ARGUMENT (ORDER_ALREADY_CLOSED, ORDER_ALREADY_EXIST,
UNFREEZE_AMOUNT_LIMIT_EXCEED), ACQ.TRADE_SETTLE_NOT_EXIST, ACQ.ALLOC_AMOUNT_VALIDATE_ERROR and the
bill's isp.bill_not_exist (integrators report BILL_NOT_EXIST); the app's refusal of a credit
freeze reuses the documented trade code ACQ.ZM_CREDIT_AUTH_FAIL (综合评估不通过), the pages
naming none for the freeze. The adapter depends on none of these names (it asks Alipay again,
or skips a bill whose code names a missing bill).

Signatures, exactly as documented:

- a request (GET query string or POST form) is verified with the **app public key** over the
  parameters sorted by name, ``sign`` left out and empty values left out, joined as ``k=v&...``
  with raw (decoded) values; ``sign_type`` takes part. A bad one answers code 40002
  ``isv.invalid-signature``, unsigned, as the gateway does;
- a response is ``{"<method>_response": {...}, "sign": "..."}``, ``sign`` being RSA2 with the
  **Alipay private key** over the exact text of the response node;
- a notification is signed with the Alipay private key over its parameters sorted, without
  ``sign`` and ``sign_type``, empty values kept (as Alipay's own Java SDK checks them,
  ``AlipaySignature.rsaCheckV1``; python-alipay-sdk's ``verify`` does the same).

Failure modes, switched by the test:

- ``decline_users``: the renter's Alipay app refuses the credit freeze (``renter_submits``
  answers code 40004 with the user's sub_code; the order stays INIT until it times out);
- a renter who never submits the order string: nothing happens; after ``timeout_express`` the
  order (if created) closes, and the order string is refused;
- ``auth_ttl_s``: a frozen authorization expires, Alipay unfreezes it (``fund_auth_unfreeze``
  notification) and a later alipay.trade.pay answers ``ACQ.AUTH_ORDER_HAS_CLOSED``;
- ``set_balance(user, fen)``: a credit freeze reserves no money, so the payment draws on the
  renter's balance; too little answers ``ACQ.BUYER_BALANCE_NOT_ENOUGH`` (retry allowed);
- ``fail_next(method, status=502)`` / ``fail_next(method, sub_code="ACQ.SYSTEM_ERROR")`` /
  ``fail_next(method, sub_code="aop.ACQ.SYSTEM_ERROR", code="20000")``, optionally after the
  effect took place; ``timeout_next(method, delay_s)``: the answer comes too late;
  ``corrupt_next_sign(method)``: the response's signature does not verify;
- notifications: ``notify_mode`` "after" (default: after the answer), "before" (before the
  answer is sent), "manual" (queued until ``deliver()``, optionally in reverse order);
  ``notify_copies`` deliveries of each; ``notify_delay_s`` late;
- ``advance(seconds)`` moves the fake's clock (expiries, bill dates).

What it does not model: credit scoring beyond ``decline_users``; a renter paying a cash deposit
when credit is refused; the alipay.fund.auth.order.app.freeze response to the app beyond its
signed JSON; disputes (Alipay documents none for this flow); account-bill rows other than those
this flow makes (payments in, fees, refunds, settles).
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CST = timezone(timedelta(hours=8))  # Alipay's times and bill dates are Beijing time (no DST)
PRE_AUTH_PRODUCTS = ("PREAUTH_PAY", "PRE_AUTH_ONLINE")  # current code, and the older one
_DETAIL_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def generate_rsa_keypair() -> tuple[str, str]:
    """A fresh RSA-2048 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@functools.lru_cache(maxsize=16)
def _private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)  # slow: it checks the key
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@functools.lru_cache(maxsize=16)
def _public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def rsa2_sign(private_pem: str, message: str) -> str:
    """base64 SHA256WithRSA (PKCS#1 v1.5) of ``message`` (UTF-8), as Alipay's RSA2."""
    sig = _private_key(private_pem).sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(sig).decode()


def rsa2_verify(public_pem: str, message: str, signature: str) -> bool:
    key = _public_key(public_pem)
    try:
        key.verify(base64.b64decode(signature), message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


def sign_content(params: dict[str, str], *, drop: tuple[str, ...], keep_empty: bool = False) -> str:
    """The documented string to sign: sorted ``k=v`` joined by ``&``, raw values. A request's
    empty values are left out (AlipaySignature.getSignContent); a notification's are kept
    (AlipaySignature.getSignCheckContentV1, which the Alipay SDKs verify notifications with)."""
    return "&".join(
        f"{k}={v}" for k, v in sorted(params.items()) if k not in drop and (keep_empty or v != "")
    )


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def to_fen(text: Any) -> int | None:
    """Fen of a yuan amount with at most two decimals; None when it is not one."""
    try:
        d = Decimal(str(text))
    except InvalidOperation:
        return None
    if not d.is_finite() or d != d.quantize(Decimal("0.01")):
        return None
    return int(d * 100)


class BizError(Exception):
    """A business failure answered as code/sub_code (signed like any response)."""

    def __init__(
        self, sub_code: str, sub_msg: str, code: str = "40004", msg: str = "Business Failed"
    ) -> None:
        super().__init__(f"{sub_code}: {sub_msg}")
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


@dataclass
class Operation:
    operation_id: str
    out_request_no: str
    operation_type: str  # FREEZE | UNFREEZE | PAY
    amount: int
    status: str  # INIT | SUCCESS | CLOSED
    gmt_create: float
    gmt_trans: float | None = None
    remark: str = ""


@dataclass
class AuthOrder:
    out_order_no: str
    auth_no: str
    amount: int
    product_code: str
    order_title: str
    payee_user_id: str
    notify_url: str
    extra_param: str
    deadline: float  # the order closes if not frozen by then (timeout_express)
    status: str = "INIT"  # INIT | AUTHORIZED | FINISH | CLOSED
    payer_user_id: str = ""
    rest: int = 0
    paid: int = 0
    authorized_at: float | None = None
    operations: dict[str, Operation] = field(default_factory=dict)  # by out_request_no

    def freeze_op(self) -> Operation:
        return next(op for op in self.operations.values() if op.operation_type == "FREEZE")


@dataclass
class Trade:
    trade_no: str
    out_trade_no: str
    auth_no: str
    amount: int
    subject: str
    buyer_id: str
    seller_id: str
    notify_url: str
    params: dict[str, str]  # what decides "the same request" (ACQ.CONTEXT_INCONSISTENT otherwise)
    status: str = "FAILED"  # FAILED (a refused attempt, retryable) | TRADE_SUCCESS | TRADE_CLOSED
    created_at: float = 0.0
    paid_at: float | None = None
    fee: int = 0
    refunds: dict[str, tuple[int, float]] = field(default_factory=dict)  # out_request_no -> (fen, at)
    settled: int = 0

    @property
    def refunded(self) -> int:
        return sum(a for a, _ in self.refunds.values())


@dataclass
class Settle:
    settle_no: str
    out_request_no: str
    trade_no: str
    trans_in: str
    trans_in_type: str
    amount: int
    at: float
    state: str = "SUCCESS"


@dataclass
class Notification:
    notify_id: str
    url: str
    params: dict[str, str]  # signed, ready to send
    deliveries: list[tuple[int, str]] = field(default_factory=list)  # (HTTP status, answer body)

    @property
    def body(self) -> bytes:
        return urllib.parse.urlencode(self.params).encode()


@dataclass
class _Fault:
    status: int | None = None
    code: str = "40004"
    sub_code: str = ""
    after_effect: bool = False
    delay_s: float = 0.0
    corrupt_sign: bool = False


class AlipayFake:
    """The fake gateway (see module doc). Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        app_id: str,
        app_public_key: str,
        alipay_private_key: str,
        seller_id: str = "2088000000000001",
        auth_ttl_s: float = 30 * 86400,
        fee_rate_bp: int = 60,
    ) -> None:
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.alipay_private_key = alipay_private_key
        self.seller_id = seller_id
        self.auth_ttl_s = auth_ttl_s
        self.fee_rate_bp = fee_rate_bp
        self.decline_users: dict[str, str] = {}  # buyer id -> sub_code of the app's refusal
        self.balances: dict[str, int] = {}  # buyer id -> fen available to pay (absent: unlimited)
        self.notify_mode = "after"  # after | before | manual
        self.notify_copies = 1
        self.notify_delay_s = 0.0
        self.auto_unfreeze_url: str | None = None  # the app gateway address; default the order's
        self.orders: dict[str, AuthOrder] = {}
        self.trades: dict[str, Trade] = {}
        self.settles: dict[str, Settle] = {}
        self.effects: list[tuple[str, str]] = []  # (kind, reference): one per effect that took place
        self.requests: list[str] = []  # method names received, in order
        self.biz: list[tuple[str, dict[str, Any], dict[str, str]]] = []  # (method, biz_content, params)
        self.queued: list[Notification] = []
        self.sent: list[Notification] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._offset = 0.0
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self._bill_tokens: dict[str, tuple[str, str, float]] = {}  # token -> (bill type, date, valid until)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> AlipayFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="alipay-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> AlipayFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def gateway_url(self) -> str:
        return self.base_url + "/gateway.do"

    # --- test controls -------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock on; expire what is due (and send those notifications)."""
        with self._lock:
            self._offset += seconds
            out = self._sweep()
        self._dispatch(out)

    def set_balance(self, buyer_id: str, fen: int) -> None:
        with self._lock:
            self.balances[buyer_id] = fen

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        sub_code: str = "",
        code: str = "40004",
        after_effect: bool = False,
    ) -> None:
        """The next call of ``method`` fails: HTTP ``status``, or a code/sub_code answer."""
        if status is None and not sub_code:
            raise ValueError("give status= or sub_code=")
        self._faults.setdefault(method, []).append(_Fault(status, code, sub_code, after_effect))

    def timeout_next(self, method: str, delay_s: float) -> None:
        """The next answer to ``method`` comes ``delay_s`` late; the call takes effect meanwhile."""
        self._faults.setdefault(method, []).append(_Fault(after_effect=True, delay_s=delay_s))

    def corrupt_next_sign(self, method: str) -> None:
        """The next answer to ``method`` carries a signature that does not verify."""
        self._faults.setdefault(method, []).append(_Fault(corrupt_sign=True, after_effect=True))

    def effect_count(self, kind: str, ref: str | None = None) -> int:
        with self._lock:
            return sum(1 for k, r in self.effects if k == kind and (ref is None or r == ref))

    def deliver(self, reverse: bool = False) -> list[Notification]:
        """Send the queued notifications (manual mode, or those that failed); returns them."""
        with self._lock:
            batch, self.queued = self.queued, []
        if reverse:
            batch.reverse()
        for n in batch:
            self._post(n)
        return batch

    def order(self, out_order_no: str) -> AuthOrder:
        with self._lock:
            return self.orders[out_order_no]

    # --- the renter's Alipay app ---------------------------------------------------------

    def _log(self, method: str, params: dict[str, str]) -> None:
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            biz = {}
        self.biz.append((method, biz if isinstance(biz, dict) else {}, dict(params)))

    def last_biz(self, method: str) -> dict[str, Any]:
        with self._lock:
            return next(b for m, b, _ in reversed(self.biz) if m == method)

    def renter_submits(self, order_str: str, buyer_id: str, confirm: bool = True) -> dict[str, str]:
        """The renter's Alipay app opens ``order_str`` (my.tradePay / the app SDK) and confirms.

        Alipay verifies the order string's signature, then freezes (a credit authorization:
        nothing of the renter's money is reserved) or refuses. Returns what the app gets:
        ``{"resultCode": "9000"|"4000", "result": <signed JSON text>}``. With ``confirm=False`` the
        renter opens the cashier (Alipay creates the order, INIT) and walks away: ``6001``.
        """
        params = dict(urllib.parse.parse_qsl(order_str, keep_blank_values=True))
        node_name = "alipay_fund_auth_order_app_freeze_response"
        out: list[Notification] = []
        with self._lock:
            self.requests.append("alipay.fund.auth.order.app.freeze")
            self._log("alipay.fund.auth.order.app.freeze", params)
            out += self._sweep()
            try:
                self._check_request(params, "alipay.fund.auth.order.app.freeze")
                node = {"code": "10000", "msg": "Success", **self._app_freeze(params, buyer_id, out, confirm)}
                if not confirm:
                    return {"resultCode": "6001", "result": ""}
            except BizError as e:
                node = {"code": e.code, "msg": e.msg, "sub_code": e.sub_code, "sub_msg": e.sub_msg}
            except _Unsigned as e:  # refused by the gateway: unsigned
                return {"resultCode": "4000", "result": json.dumps({node_name: e.node}, ensure_ascii=False)}
            text = self._signed_body(node_name, node)
        if self.notify_mode == "before":
            self._dispatch(out, force=True)
        result = {"resultCode": "9000" if node.get("code") == "10000" else "4000", "result": text}
        if self.notify_mode != "before":
            self._dispatch(out)
        return result

    # --- HTTP ----------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        if url.path == "/downloadBillFile.resource":
            self._download(h, dict(urllib.parse.parse_qsl(url.query)))
            return
        if url.path != "/gateway.do":
            self._reply(h, 404, b"not found", "text/plain")
            return
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if h.command == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            params.update(urllib.parse.parse_qsl(h.rfile.read(length).decode(), keep_blank_values=True))
        method = params.get("method", "")
        node_name = method.replace(".", "_") + "_response"
        faults = self._faults.get(method)
        fault = faults.pop(0) if faults else None
        out: list[Notification] = []
        with self._lock:
            self.requests.append(method)
            self._log(method, params)
            out += self._sweep()
            if fault is not None and not fault.after_effect:  # refused before anything happens
                body, status = self._fault_body(fault, node_name), fault.status or 200
            else:
                node, body, status = self._answer(method, params, node_name, out)
                if fault is not None and fault.corrupt_sign and node is not None:
                    body = self._signed_body(
                        node_name, {**node, "msg": node["msg"] + "."}, signed=node
                    ).encode()
                elif fault is not None and (fault.status or fault.sub_code):  # the effect took place
                    body, status = self._fault_body(fault, node_name), fault.status or 200
        if self.notify_mode == "manual":  # queued before the answer, so deliver() after it finds them
            self._dispatch(out)
            out = []
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if self.notify_mode == "before":
            self._dispatch(out, force=True)
        self._reply(h, status, body, "text/html;charset=utf-8")
        if self.notify_mode != "before":
            self._dispatch(out)

    def _answer(
        self, method: str, params: dict[str, str], node_name: str, out: list[Notification]
    ) -> tuple[dict[str, Any] | None, bytes, int]:
        """(signed node or None, body, HTTP status) of one gateway request."""
        try:
            self._check_request(params, method)
            node = self._dispatch_method(method, params, out)
        except BizError as e:
            node = {"code": e.code, "msg": e.msg, "sub_code": e.sub_code, "sub_msg": e.sub_msg}
        except _Unsigned as e:
            return None, json.dumps({node_name: e.node}, ensure_ascii=False).encode(), 200
        return node, self._signed_body(node_name, node).encode(), 200

    def _fault_body(self, fault: _Fault, node_name: str) -> bytes:
        if fault.status is not None:
            return b"<html><body>502 Bad Gateway</body></html>"
        node = {
            "code": fault.code,
            "msg": "Service Currently Unavailable" if fault.code == "20000" else "Business Failed",
            "sub_code": fault.sub_code,
            "sub_msg": "系统繁忙",
        }
        if fault.code == "20000":  # answered by the gateway itself, unsigned
            return json.dumps({node_name: node}, ensure_ascii=False).encode()
        return self._signed_body(node_name, node).encode()

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            pass  # the client gave up (a timeout the test asked for)

    def _signed_body(self, node_name: str, node: dict[str, Any], signed: dict[str, Any] | None = None) -> str:
        """``{"<node_name>":{...},"sign":"..."}`` signed over the node's exact text (of ``signed``)."""
        text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        sig_text = text if signed is None else json.dumps(signed, ensure_ascii=False, separators=(",", ":"))
        sign = rsa2_sign(self.alipay_private_key, sig_text)
        return f'{{"{node_name}":{text},"sign":"{sign}"}}'

    def _check_request(self, params: dict[str, str], method: str) -> None:
        """The gateway's checks: app, common parameters, then the RSA2 signature."""
        if params.get("app_id") != self.app_id:
            raise _Unsigned("40002", "isv.invalid-app-id", "无效的AppID参数")
        for name in ("method", "charset", "sign_type", "sign", "timestamp", "version", "biz_content"):
            if not params.get(name):
                raise _Unsigned("40001", f"isv.missing-{name.replace('_', '-')}", f"缺少{name}参数")
        if params["sign_type"] != "RSA2":
            raise _Unsigned("40002", "isv.invalid-signature-type", "无效的签名类型")
        if not rsa2_verify(self.app_public_key, sign_content(params, drop=("sign",)), params["sign"]):
            raise _Unsigned(
                "40002", "isv.invalid-signature", "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配"
            )
        try:
            json.loads(params["biz_content"])
        except ValueError as e:
            raise _Unsigned("40002", "isv.invalid-biz-content", "biz_content 不是 JSON") from e

    def _dispatch_method(
        self, method: str, params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        handlers: dict[
            str, Callable[[dict[str, Any], dict[str, str], list[Notification]], dict[str, Any]]
        ] = {
            "alipay.fund.auth.operation.detail.query": self._detail_query,
            "alipay.fund.auth.order.unfreeze": self._unfreeze,
            "alipay.fund.auth.operation.cancel": self._cancel,
            "alipay.trade.pay": self._trade_pay,
            "alipay.trade.query": self._trade_query,
            "alipay.trade.refund": self._refund,
            "alipay.trade.fastpay.refund.query": self._refund_query,
            "alipay.trade.order.settle": self._settle,
            "alipay.trade.order.settle.query": self._settle_query,
            "alipay.data.dataservice.bill.downloadurl.query": self._bill_url,
        }
        if method not in handlers:
            raise _Unsigned("40002", "isv.invalid-method", f"不存在的方法名 {method}")
        biz = json.loads(params["biz_content"])
        node = handlers[method](biz, params, out)
        return {"code": "10000", "msg": "Success", **node}

    # --- fund authorization --------------------------------------------------------------

    def _app_freeze(
        self, params: dict[str, str], buyer_id: str, out: list[Notification], confirm: bool = True
    ) -> dict[str, Any]:
        biz = json.loads(params["biz_content"])
        for name in ("out_order_no", "out_request_no", "order_title", "amount", "product_code"):
            if not biz.get(name):
                raise BizError("ILLEGAL_ARGUMENT", f"参数 {name} 缺失")
        if biz["product_code"] not in PRE_AUTH_PRODUCTS:
            raise BizError("ILLEGAL_ARGUMENT", "product_code 错误")
        if not (biz.get("payee_user_id") or biz.get("payee_logon_id")):
            raise BizError("ILLEGAL_ARGUMENT", "payee_user_id 与 payee_logon_id 不能同时为空")
        amount = to_fen(biz["amount"])
        if amount is None or amount <= 0:
            raise BizError("ILLEGAL_ARGUMENT", "amount 格式错误")
        try:
            extra = json.loads(biz.get("extra_param") or "{}")
        except ValueError as e:
            raise BizError("ILLEGAL_ARGUMENT", "extra_param 不是 JSON 字符串") from e
        if not extra.get("category") or not extra.get("serviceId"):
            raise BizError("ILLEGAL_ARGUMENT", "信用授权需要 extra_param 的 category 与 serviceId")
        if biz.get("deposit_product_mode") in ("POSTPAY", "POSTPAY_UNCERTAIN") and not biz.get(
            "post_payments"
        ):
            raise BizError("ILLEGAL_ARGUMENT", "后付模式需要 post_payments")
        signed_at = (
            datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp()
        )
        deadline = signed_at + _duration(biz.get("timeout_express") or "15d")
        now = self.now()
        order = self.orders.get(biz["out_order_no"])
        if order is None:
            if now > deadline:
                raise BizError("ORDER_ALREADY_CLOSED", "订单已超时关闭")
            order = AuthOrder(
                out_order_no=biz["out_order_no"],
                auth_no=self._number(28),
                amount=amount,
                product_code=biz["product_code"],
                order_title=biz["order_title"],
                payee_user_id=biz.get("payee_user_id", ""),
                notify_url=params.get("notify_url", ""),
                extra_param=biz.get("extra_param", ""),
                deadline=deadline,
            )
            order.operations[biz["out_request_no"]] = Operation(
                self._number(20), biz["out_request_no"], "FREEZE", amount, "INIT", now
            )
            self.orders[order.out_order_no] = order
        op = order.operations.get(biz["out_request_no"])
        if op is None or op.operation_type != "FREEZE" or op.amount != amount:
            raise BizError("ORDER_ALREADY_EXIST", "商户订单号已存在且请求信息不一致")
        if order.status == "CLOSED":
            raise BizError("ORDER_ALREADY_CLOSED", "订单已关闭")
        if order.status == "INIT" and confirm:
            if buyer_id in self.decline_users:
                raise BizError(self.decline_users[buyer_id], "综合评估不通过")
            order.status, order.payer_user_id, order.rest, order.authorized_at = (
                "AUTHORIZED",
                buyer_id,
                amount,
                now,
            )
            op.status, op.gmt_trans = "SUCCESS", now
            self.effects.append(("freeze", order.out_order_no))
            out += self._notify(order.notify_url, self._fund_params(order, op, "fund_auth_freeze"))
        return {**self._freeze_node(order, op)}

    def _freeze_node(self, order: AuthOrder, op: Operation) -> dict[str, Any]:
        return {
            "auth_no": order.auth_no,
            "out_order_no": order.out_order_no,
            "operation_id": op.operation_id,
            "out_request_no": op.out_request_no,
            "amount": yuan(op.amount),
            "status": op.status,
            "payer_user_id": order.payer_user_id,
            "gmt_trans": _cst(op.gmt_trans or op.gmt_create),
            "pre_auth_type": "CREDIT_AUTH",
            "credit_amount": yuan(op.amount),
            "fund_amount": "0.00",
        }

    def _fund_params(self, order: AuthOrder, op: Operation, notify_type: str) -> dict[str, str]:
        return {
            "notify_type": notify_type,
            "auth_no": order.auth_no,
            "out_order_no": order.out_order_no,
            "operation_id": op.operation_id,
            "out_request_no": op.out_request_no,
            "operation_type": op.operation_type,
            "amount": yuan(op.amount),
            "status": op.status,
            "gmt_create": _cst(op.gmt_create),
            "gmt_trans": _cst(op.gmt_trans or op.gmt_create),
            "payer_user_id": order.payer_user_id,
            "payee_user_id": order.payee_user_id,
            "total_freeze_amount": yuan(order.amount),
            "total_unfreeze_amount": yuan(order.amount - order.rest - order.paid),
            "total_pay_amount": yuan(order.paid),
            "rest_amount": yuan(order.rest),
            "pre_auth_type": "CREDIT_AUTH",
            "credit_amount": yuan(op.amount),
            "fund_amount": "0.00",
        }

    def _find_order(self, biz: dict[str, Any]) -> AuthOrder:
        if biz.get("auth_no"):
            found = [o for o in self.orders.values() if o.auth_no == biz["auth_no"]]
            if found:
                return found[0]
        elif biz.get("out_order_no") in self.orders:
            return self.orders[biz["out_order_no"]]
        raise BizError("AUTH_ORDER_NOT_EXIST", "支付宝资金授权订单不存在")

    def _detail_query(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        order = self._find_order(biz)
        kind = biz.get("operation_type")
        if biz.get("operation_id"):
            ops = [op for op in order.operations.values() if op.operation_id == biz["operation_id"]]
        elif biz.get("out_request_no"):
            ops = [op for op in order.operations.values() if op.out_request_no == biz["out_request_no"]]
        else:
            raise BizError("ILLEGAL_ARGUMENT", "operation_id 与 out_request_no 不能同时为空")
        if kind:
            ops = [op for op in ops if op.operation_type == kind]
        if not ops:
            raise BizError("AUTH_OPERATION_NOT_EXIST", "支付宝资金操作流水不存在")
        op = sorted(ops, key=lambda o: ("FREEZE", "UNFREEZE", "PAY").index(o.operation_type))[0]
        return {
            "auth_no": order.auth_no,
            "out_order_no": order.out_order_no,
            "order_status": order.status,
            "total_freeze_amount": yuan(order.amount),
            "rest_amount": yuan(order.rest),
            "total_pay_amount": yuan(order.paid),
            "order_title": order.order_title,
            "payer_user_id": order.payer_user_id,
            "operation_id": op.operation_id,
            "out_request_no": op.out_request_no,
            "amount": yuan(op.amount),
            "operation_type": op.operation_type,
            "status": op.status,
            "remark": op.remark,
            "gmt_create": _cst(op.gmt_create),
            "gmt_trans": _cst(op.gmt_trans) if op.gmt_trans else "",
            "pre_auth_type": "CREDIT_AUTH",
            "credit_amount": yuan(op.amount),
            "fund_amount": "0.00",
        }

    def _unfreeze(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        for name in ("auth_no", "out_request_no", "amount", "remark"):
            if not biz.get(name):
                raise BizError("ILLEGAL_ARGUMENT", f"参数 {name} 缺失")
        order = self._find_order({"auth_no": biz["auth_no"]})
        amount = to_fen(biz["amount"])
        if amount is None or amount <= 0:
            raise BizError("ILLEGAL_ARGUMENT", "amount 格式错误")
        op = order.operations.get(biz["out_request_no"])
        if op is not None:  # the same request again: the first result
            if op.operation_type != "UNFREEZE" or op.amount != amount:
                raise BizError("ILLEGAL_ARGUMENT", "out_request_no 已被其他请求使用")
        else:
            if order.status != "AUTHORIZED":
                raise BizError("ORDER_ALREADY_CLOSED", f"授权订单状态为 {order.status}，不能解冻")
            if amount > order.rest:
                raise BizError("UNFREEZE_AMOUNT_LIMIT_EXCEED", "解冻金额超过剩余冻结金额")
            now = self.now()
            op = Operation(
                self._number(20),
                biz["out_request_no"],
                "UNFREEZE",
                amount,
                "SUCCESS",
                now,
                now,
                str(biz["remark"]),
            )
            order.operations[op.out_request_no] = op
            order.rest -= amount
            if order.rest == 0:
                order.status = "FINISH" if order.paid else "CLOSED"
            self.effects.append(("unfreeze", op.out_request_no))
            out += self._notify(
                params.get("notify_url") or order.notify_url,
                self._fund_params(order, op, "fund_auth_unfreeze"),
            )
        return {
            "auth_no": order.auth_no,
            "out_order_no": order.out_order_no,
            "operation_id": op.operation_id,
            "out_request_no": op.out_request_no,
            "amount": yuan(op.amount),
            "status": op.status,
            "gmt_trans": _cst(op.gmt_trans or op.gmt_create),
            "credit_amount": yuan(op.amount),
            "fund_amount": "0.00",
        }

    def _cancel(self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]) -> dict[str, Any]:
        order = self._find_order(biz)
        op = order.operations.get(biz.get("out_request_no", ""))
        if op is None or op.operation_type != "FREEZE":
            raise BizError("AUTH_OPERATION_NOT_EXIST", "支付宝资金操作流水不存在")
        action = "close"
        if order.status == "INIT":
            order.status, op.status = "CLOSED", "CLOSED"
            self.effects.append(("cancel", order.out_order_no))
        elif order.status == "AUTHORIZED":
            action = "unfreeze"
            order.rest, order.status, op.status = 0, "CLOSED", "CLOSED"
            self.effects.append(("cancel", order.out_order_no))
        return {
            "auth_no": order.auth_no,
            "out_order_no": order.out_order_no,
            "operation_id": op.operation_id,
            "out_request_no": op.out_request_no,
            "action": action,
        }

    # --- payment, refunds, settlement ----------------------------------------------------

    def _trade_pay(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        for name in ("out_trade_no", "total_amount", "subject", "auth_no", "product_code"):
            if not biz.get(name):
                raise BizError("ACQ.INVALID_PARAMETER", f"参数 {name} 缺失")
        amount = to_fen(biz["total_amount"])
        if amount is None or amount <= 0:
            raise BizError("ACQ.INVALID_PARAMETER", "total_amount 格式错误")
        same = {
            k: str(biz.get(k, "")) for k in ("total_amount", "subject", "auth_no", "buyer_id", "product_code")
        }
        trade = self.trades.get(biz["out_trade_no"])
        if trade is not None:
            if trade.params != same:
                raise BizError("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            if trade.status != "FAILED":
                raise BizError("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
        orders = [o for o in self.orders.values() if o.auth_no == biz["auth_no"]]
        if not orders:
            raise BizError("ACQ.AUTH_NO_ERROR", "预授权号错误或状态不对")
        order = orders[0]
        if biz["product_code"] not in PRE_AUTH_PRODUCTS:
            raise BizError("ACQ.PRE_AUTH_PROD_CODE_INCONSISTENT", "预授权产品码不一致")
        if order.status == "CLOSED":
            raise BizError("ACQ.AUTH_ORDER_HAS_CLOSED", "预授权订单已关闭")
        if order.status == "FINISH":
            raise BizError("ACQ.AUTH_ORDER_HAS_FINISHED", "预授权订单已经完结")
        if order.status == "INIT":
            raise BizError("ACQ.AUTH_ORDER_NOT_PAID", "预授权订单未支付")
        buyer = str(biz.get("buyer_id") or order.payer_user_id)
        if buyer != order.payer_user_id:
            raise BizError("ACQ.PAYER_UNMATCHED", "付款人不匹配")
        if amount > order.rest:
            raise BizError("ACQ.AUTH_AMOUNT_NOT_ENOUGH", "授权金额不足")
        now = self.now()
        if trade is None:
            trade = Trade(
                self._number(28),
                biz["out_trade_no"],
                order.auth_no,
                amount,
                biz["subject"],
                buyer,
                str(biz.get("seller_id") or self.seller_id),
                params.get("notify_url", ""),
                same,
                created_at=now,
            )
            self.trades[trade.out_trade_no] = trade
        balance = self.balances.get(buyer)
        if balance is not None and balance < amount:  # a credit freeze reserved nothing
            raise BizError("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足")
        if balance is not None:
            self.balances[buyer] = balance - amount
        trade.status, trade.paid_at = "TRADE_SUCCESS", now
        trade.fee = (amount * self.fee_rate_bp + 5000) // 10000
        order.paid += amount
        order.rest -= amount
        pay_op = Operation(self._number(20), trade.out_trade_no, "PAY", amount, "SUCCESS", now, now)
        order.operations[pay_op.out_request_no] = pay_op
        if biz.get("auth_confirm_mode") == "COMPLETE":
            order.rest = 0  # the remainder is unfrozen at once
        order.status = "FINISH" if order.rest == 0 else "AUTHORIZED"
        self.effects.append(("pay", trade.out_trade_no))
        out += self._notify(trade.notify_url, self._trade_params(trade))
        return self._trade_node(trade)

    def _trade_node(self, trade: Trade) -> dict[str, Any]:
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_user_id": trade.buyer_id,
            "total_amount": yuan(trade.amount),
            "receipt_amount": yuan(trade.amount),
            "gmt_payment": _cst(trade.paid_at or trade.created_at),
            "fund_bill_list": [{"fund_channel": "ALIPAYACCOUNT", "amount": yuan(trade.amount)}],
        }

    def _trade_params(self, trade: Trade, refund_no: str | None = None) -> dict[str, str]:
        p = {
            "notify_type": "trade_status_sync",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_id": trade.buyer_id,
            "seller_id": trade.seller_id,
            "trade_status": trade.status,
            "total_amount": yuan(trade.amount),
            "receipt_amount": yuan(trade.amount),
            "subject": trade.subject,
            "gmt_create": _cst(trade.created_at),
            "gmt_payment": _cst(trade.paid_at or trade.created_at),
        }
        if refund_no is not None:
            p.update(
                out_biz_no=refund_no,
                refund_fee=yuan(trade.refunded),
                gmt_refund=_cst(trade.refunds[refund_no][1]),
            )
        return p

    def _find_trade(self, biz: dict[str, Any]) -> Trade:
        trade = self.trades.get(biz.get("out_trade_no", ""))
        if trade is None and biz.get("trade_no"):
            trade = next((t for t in self.trades.values() if t.trade_no == biz["trade_no"]), None)
        if trade is None or trade.status == "FAILED":
            raise BizError("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return trade

    def _trade_query(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        trade = self._find_trade(biz)
        return {**self._trade_node(trade), "trade_status": trade.status}

    def _refund(self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]) -> dict[str, Any]:
        trade = self._find_trade(biz)
        amount = to_fen(biz.get("refund_amount"))
        if amount is None or amount <= 0:
            raise BizError("ACQ.INVALID_PARAMETER", "refund_amount 格式错误")
        request_no = str(biz.get("out_request_no") or trade.out_trade_no)
        fund_change = "N"
        if request_no not in trade.refunds:
            if trade.status != "TRADE_SUCCESS":
                raise BizError("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            if amount > trade.amount - trade.refunded:
                raise BizError("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            trade.refunds[request_no] = (amount, self.now())
            if trade.refunded == trade.amount:
                trade.status = "TRADE_CLOSED"
            fund_change = "Y"
            self.effects.append(("refund", request_no))
            out += self._notify(trade.notify_url, self._trade_params(trade, request_no))
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_user_id": trade.buyer_id,
            "fund_change": fund_change,
            "refund_fee": yuan(trade.refunded),
            "gmt_refund_pay": _cst(trade.refunds[request_no][1]),
        }

    def _refund_query(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        trade = self._find_trade(biz)
        refund = trade.refunds.get(str(biz.get("out_request_no", "")))
        if refund is None:  # Alipay answers success without refund fields when there is none
            return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "out_request_no": biz["out_request_no"],
            "total_amount": yuan(trade.amount),
            "refund_amount": yuan(refund[0]),
            "refund_status": "REFUND_SUCCESS",
        }

    def _settle(self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]) -> dict[str, Any]:
        for name in ("out_request_no", "trade_no", "royalty_parameters"):
            if not biz.get(name):
                raise BizError("ACQ.INVALID_PARAMETER", f"参数 {name} 缺失")
        existing = self.settles.get(biz["out_request_no"])
        if existing is not None:  # idempotent on out_request_no: the first settle_no
            return {"trade_no": existing.trade_no, "settle_no": existing.settle_no}
        trade = self._find_trade({"trade_no": biz["trade_no"]})
        (royalty,) = biz["royalty_parameters"]
        amount = to_fen(royalty.get("amount"))
        trans_in, trans_in_type = str(royalty.get("trans_in", "")), royalty.get("trans_in_type", "userId")
        user_id = trans_in.startswith("2088") and len(trans_in) == 16 and trans_in.isdigit()
        login = "@" in trans_in or (len(trans_in) == 11 and trans_in.isdigit())  # an email or a phone number
        if not (user_id if trans_in_type == "userId" else login):
            raise BizError("ACQ.ROYALTY_ACCOUNT_NOT_EXIST", "分账收款方账号不存在")
        if amount is None or amount <= 0 or amount > trade.amount - trade.refunded - trade.settled:
            raise BizError("ACQ.ALLOC_AMOUNT_VALIDATE_ERROR", "分账金额超过最大可分账金额")
        trade.settled += amount
        s = Settle(
            self._number(28),
            biz["out_request_no"],
            trade.trade_no,
            trans_in,
            trans_in_type,
            amount,
            self.now(),
        )
        self.settles[s.out_request_no] = s
        self.effects.append(("settle", s.out_request_no))
        return {"trade_no": trade.trade_no, "settle_no": s.settle_no}

    def _settle_query(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        found = [
            s
            for s in self.settles.values()
            if s.settle_no == biz.get("settle_no")
            or (s.out_request_no == biz.get("out_request_no") and s.trade_no == biz.get("trade_no"))
        ]
        if not found:
            raise BizError("ACQ.TRADE_SETTLE_NOT_EXIST", "分账单据不存在")
        s = found[0]
        return {
            "out_request_no": s.out_request_no,
            "operation_dt": _cst(s.at),
            "royalty_detail_list": [
                {
                    "operation_type": "transfer",
                    "execute_dt": _cst(s.at),
                    "trans_in": s.trans_in,
                    "trans_in_type": s.trans_in_type,
                    "amount": yuan(s.amount),
                    "state": s.state,
                }
            ],
        }

    # --- bills ---------------------------------------------------------------------------

    def _bill_url(
        self, biz: dict[str, Any], params: dict[str, str], out: list[Notification]
    ) -> dict[str, Any]:
        if biz.get("bill_type") not in ("trade", "signcustomer"):
            raise BizError("isv.invalid-bill-type", "账单类型错误", code="40004")
        try:
            day = datetime.strptime(str(biz.get("bill_date")), "%Y-%m-%d").date()
        except ValueError as e:
            raise BizError("isv.invalid-bill-date", "账单日期格式错误") from e
        if day >= datetime.fromtimestamp(self.now(), CST).date():  # bills of a day exist the day after
            raise BizError("isp.bill_not_exist", "账单不存在")
        token = secrets.token_hex(8)
        self._bill_tokens[token] = (biz["bill_type"], day.isoformat(), self.now() + 30)
        query = urllib.parse.urlencode(
            {
                "bizType": biz["bill_type"],
                "userId": self.seller_id,
                "fileType": "csv.zip",
                "bizDates": day.strftime("%Y%m%d"),
                "downloadFileName": f"{self.seller_id}_{day:%Y%m%d}.csv.zip",
                "fileId": secrets.token_hex(6),
                "timestamp": str(int(self.now())),
                "token": token,
            }
        )
        return {"bill_download_url": f"{self.base_url}/downloadBillFile.resource?{query}"}

    def _download(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        with self._lock:
            got = self._bill_tokens.get(q.get("token", ""))
            if got is None or got[2] < self.now():
                self._reply(h, 403, "链接已失效".encode(), "text/plain;charset=utf-8")
                return
            day = datetime.strptime(got[1], "%Y-%m-%d").date()
            body = self.bill_zip(day) if got[0] == "trade" else self.account_bill_zip(day)
        self._reply(h, 200, body, "application/zip")

    def bill_zip(self, day: Any) -> bytes:
        """The trade bill of the Beijing date ``day``: a zip of the detail and summary CSV (GBK)."""
        rows: list[list[str]] = []
        for t in self.trades.values():
            if t.paid_at is not None and datetime.fromtimestamp(t.paid_at, CST).date() == day:
                rows.append(self._bill_row(t, "交易", t.amount, t.fee, "", t.paid_at))
            for no, (amount, at) in t.refunds.items():
                if datetime.fromtimestamp(at, CST).date() == day:
                    fee = (amount * self.fee_rate_bp + 5000) // 10000
                    rows.append(self._bill_row(t, "退款", -amount, -fee, no, at))
        start, end = (
            datetime.combine(day, datetime.min.time()),
            datetime.combine(day, datetime.min.time()) + timedelta(days=1),
        )
        buf = io.StringIO()
        buf.write("#支付宝业务明细查询\n")
        buf.write(f"#账号：[{self.seller_id}0156]\n")
        buf.write(f"#起始日期：[{start:%Y年%m月%d日 %H:%M:%S}]   终止日期：[{end:%Y年%m月%d日 %H:%M:%S}]\n")
        buf.write(
            "#-----------------------------------------业务明细列表----------------------------------------\n"
        )
        buf.write(_DETAIL_HEADER + "\n")
        w = csv.writer(buf, lineterminator="\n")
        for r in rows:
            w.writerow(
                [c + "\t" if i in (0, 1) else c for i, c in enumerate(r)]
            )  # Alipay pads ids with a tab
        buf.write(
            "#-----------------------------------------业务明细列表结束------------------------------------\n"
        )
        income = sum(to_fen(r[12]) or 0 for r in rows if r[2] == "交易")
        refunds = sum(to_fen(r[12]) or 0 for r in rows if r[2] == "退款")
        buf.write(f"#交易合计：{sum(1 for r in rows if r[2] == '交易')}笔，商家实收共{yuan(income)}元\n")
        buf.write(f"#退款合计：{sum(1 for r in rows if r[2] == '退款')}笔，商家实收退款共{yuan(refunds)}元\n")
        buf.write(f"#导出时间：[{datetime.fromtimestamp(self.now(), CST):%Y年%m月%d日 %H:%M:%S}]\n")
        summary = (
            "#支付宝业务汇总查询\n#-----------------------------------------业务汇总列表----------------------------------------\n"
            f"门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）\n,,{len(rows)},0,{yuan(income)},{yuan(income + refunds)}\n"
        )
        stem = f"{self.seller_id}0156_{day:%Y%m%d}"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{stem}_业务明细.csv", buf.getvalue().encode("gbk"))
            z.writestr(f"{stem}_业务明细(汇总).csv", summary.encode("gbk"))
        return out.getvalue()

    def account_bill_zip(self, day: Any) -> bytes:
        """The account bill (signcustomer, 账务明细) of the Beijing date ``day``: every movement of
        the merchant's balance (payments in, refunds and fees out, settles to merchants out)."""
        moves: list[tuple[float, str, str, str, str, int]] = []  # (at, biz no, out no, other, kind, fen)
        for t in self.trades.values():
            if t.paid_at is not None:
                moves.append((t.paid_at, t.trade_no, t.out_trade_no, t.buyer_id, "在线支付", t.amount))
                moves.append((t.paid_at, t.trade_no, t.out_trade_no, "", "收费", -t.fee))
            for no, (amount, at) in t.refunds.items():
                moves.append((at, t.trade_no, no, t.buyer_id, "交易退款", -amount))
        for st in self.settles.values():  # 业务流水号: the settle_no; 商户订单号: its out_request_no
            moves.append((st.at, st.settle_no, st.out_request_no, st.trans_in, "分账", -st.amount))
        moves = sorted(m for m in moves if datetime.fromtimestamp(m[0], CST).date() == day and m[5])
        buf = io.StringIO()
        buf.write("#支付宝账务明细查询\n")
        buf.write(f"#账号：[{self.seller_id}0156]\n")
        buf.write(
            f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{day + timedelta(days=1):%Y年%m月%d日} 00:00:00]\n"
        )
        buf.write(
            "#-----------------------------------------账务明细列表----------------------------------------\n"
        )
        buf.write(
            "账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注\n"
        )
        w = csv.writer(buf, lineterminator="\n")
        balance = 0
        for i, (at, biz_no, out_no, other, kind, fen) in enumerate(moves):
            balance += fen
            w.writerow(
                [
                    f"{self._number(20)}{i}\t",
                    f"{biz_no}\t",
                    f"{out_no}\t",
                    "充电宝租金\t",
                    _cst(at),
                    f"{other}\t",
                    yuan(max(fen, 0)),
                    yuan(min(fen, 0)),
                    yuan(balance),
                    "支付宝",
                    kind,
                    "",
                ]
            )
        buf.write(
            "#-----------------------------------------账务明细列表结束------------------------------------\n"
        )
        buf.write(f"#导出时间：[{datetime.fromtimestamp(self.now(), CST):%Y年%m月%d日 %H:%M:%S}]\n")
        summary = "#支付宝账务汇总查询\n类型,收入笔数,收入金额（+元）,支出笔数,支出金额（-元）,总金额（元）\n"
        stem = f"{self.seller_id}0156_{day:%Y%m%d}"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{stem}_账务明细(汇总).csv", summary.encode("gbk"))  # the summary comes first
            z.writestr(f"{stem}_账务明细.csv", buf.getvalue().encode("gbk"))
        return out.getvalue()

    def _bill_row(self, t: Trade, kind: str, amount: int, fee: int, refund_no: str, at: float) -> list[str]:
        return [
            t.trade_no,
            t.out_trade_no,
            kind,
            t.subject,
            _cst(t.created_at),
            _cst(at),
            "",
            "",
            "",
            "",
            t.buyer_id,
            yuan(t.amount),
            yuan(amount),
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "",
            "0.00",
            "0.00",
            refund_no,
            yuan(fee),
            "0.00",
            "",
        ]

    # --- time, notifications -------------------------------------------------------------

    def _sweep(self) -> list[Notification]:
        """Close INIT orders past their deadline; unfreeze authorizations past auth_ttl_s."""
        now, out = self.now(), []
        for order in self.orders.values():
            if order.status == "INIT" and now > order.deadline:
                order.status = order.freeze_op().status = "CLOSED"
            elif (
                order.status == "AUTHORIZED"
                and order.authorized_at is not None
                and now >= order.authorized_at + self.auth_ttl_s
            ):
                op = Operation(
                    self._number(20),
                    "AUTO" + self._number(16),
                    "UNFREEZE",
                    order.rest,
                    "SUCCESS",
                    now,
                    now,
                    "授权到期自动解冻",
                )
                order.operations[op.out_request_no] = op
                order.rest = 0
                order.status = "FINISH" if order.paid else "CLOSED"
                self.effects.append(("auto_unfreeze", order.out_order_no))
                out += self._notify(
                    self.auto_unfreeze_url or order.notify_url,
                    self._fund_params(order, op, "fund_auth_unfreeze"),
                )
        return out

    def _notify(self, url: str, params: dict[str, str]) -> list[Notification]:
        if not url:
            return []
        p = {
            "notify_time": _cst(self.now()),
            "notify_id": secrets.token_hex(16),
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            **params,
        }
        p["sign"] = rsa2_sign(
            self.alipay_private_key, sign_content(p, drop=("sign", "sign_type"), keep_empty=True)
        )
        p["sign_type"] = "RSA2"
        return [Notification(p["notify_id"], url, p) for _ in range(self.notify_copies)]

    def _dispatch(self, notes: list[Notification], force: bool = False) -> None:
        if not notes:
            return
        if self.notify_mode == "manual" and not force:
            with self._lock:
                self.queued += notes
            return
        if self.notify_delay_s > 0 and not force:
            timer = threading.Timer(self.notify_delay_s, self._post_all, (notes,))
            timer.daemon = True
            timer.start()
            return
        for n in notes:
            self._post(n)

    def _post_all(self, notes: list[Notification]) -> None:
        for n in notes:
            self._post(n)

    def _post(self, n: Notification) -> None:
        req = urllib.request.Request(
            n.url, data=n.body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                n.deliveries.append((resp.status, resp.read().decode(errors="replace")))
        except urllib.error.HTTPError as e:
            n.deliveries.append((e.code, e.read().decode(errors="replace")))
        except OSError as e:
            n.deliveries.append((0, str(e)))
        with self._lock:
            self.sent.append(n)
            if n.deliveries[-1][1] != "success":  # Alipay retries until it reads "success"
                self.queued.append(n)

    def _number(self, digits: int) -> str:
        stamp = datetime.fromtimestamp(self.now(), CST).strftime("%Y%m%d")
        return (stamp + f"{next(self._seq):0{digits - 8}d}")[:digits]


class _Unsigned(Exception):
    """A gateway-level refusal: answered without a signature (as the SDK's docstring shows)."""

    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(sub_code)
        self.node = {"code": code, "msg": "Invalid Arguments", "sub_code": sub_code, "sub_msg": sub_msg}


def _duration(text: str) -> float:
    """Alipay's relative timeouts: 1m..15d (m, h, d; 'c' is 'today')."""
    units = {"m": 60, "h": 3600, "d": 86400}
    if text.endswith("c"):
        return 86400.0
    return float(int(text[:-1]) * units[text[-1]])


def _cst(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, CST).strftime("%Y-%m-%d %H:%M:%S")


# --- the merchant's side of notifications, for tests -----------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class NotificationReceiver:
    """A tiny notify_url: stores every POST and answers ``success`` (or ``answer``)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer = "success"
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers.items()), body, time.time()))
                out = receiver.answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="alipay-notify", daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/payments/alipay/notify"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_type(self, notify_type: str) -> Iterator[Received]:
        with self._lock:
            items = list(self.received)
        for r in items:
            if dict(urllib.parse.parse_qsl(r.body.decode())).get("notify_type") == notify_type:
                yield r

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
