"""WeChat Pay Score (微信支付分) deposit-free rentals, API v3, through the ``wechatpayv3`` SDK.

A hold is a Pay Score *service order* (服务订单) with a risk fund (风险金) of the hold amount;
the renter confirms it in WeChat (the Pay Score mini program), nothing is frozen on a card:

- ``authorize``: ``POST /v3/payscore/serviceorder`` (``need_user_confirm=true``, ``risk_fund``
  ``DEPOSIT`` of the amount, ``time_range.start_time = "OnAccept"``). The order is ``CREATED``:
  the :class:`Hold` is ``pending`` and ``client_action`` carries what the phone passes to
  ``wx.openBusinessView`` (businessType ``wxpayScoreUse``, ``package``, HMAC-SHA256 signed
  ``extraData``). The renter's confirmation arrives as ``PAYSCORE.USER_CONFIRM``
  (``hold.confirmed``); the order is then ``DOING`` / ``USER_CONFIRM`` (``hold_status`` ``held``).
- ``capture``: ``POST /v3/payscore/serviceorder/{out_order_no}/complete`` with the fee as the
  only ``post_payments`` item and ``total_amount``; the rest of the risk fund is never taken.
  WeChat then collects the money on its own: ``PAYSCORE.USER_PAID`` (``hold.captured``). When
  it cannot, the order stays ``DOING`` / ``MCH_COMPLETE`` with ``collection.state``
  ``USER_PAYING`` and no notification comes: :meth:`WeChatPayScoreProvider.reconcile` reports
  ``payment.failed``.
- ``void``: ``POST /v3/payscore/serviceorder/{out_order_no}/cancel`` (``CREATED`` or
  ``USER_CONFIRM`` only); an order never confirmed ends ``EXPIRED`` by itself after 30 days.
- ``refund``: ``POST /v3/refund/domestic/refunds`` against the collection's ``transaction_id``
  (``REFUND.SUCCESS``).
- ``statement``: ``GET /v3/bill/tradebill`` (ALL, GZIP) and the signed download of the file.
- ``payout``: profit sharing, ``POST /v3/profitsharing/orders`` on the payment.
- disputes: consumer complaints (``COMPLAINT.CREATE`` / ``COMPLAINT.STATE_CHANGE``, details by
  ``GET /v3/merchant-service/complaints-v2/{complaint_id}``) become ``dispute.opened`` /
  ``dispute.closed``.

Idempotency: every WeChat number (``out_order_no``, ``out_refund_no``, the profit-sharing
``out_order_no``) is derived from the idempotency key (and ``out_no_namespace``), and every
request is built only from its arguments and the configuration, so a call repeated after a
timeout or a restart is WeChat's documented "原参重入" (same parameters, same answer). When
WeChat refuses a repeat anyway, the adapter queries the number and returns what exists;
another amount under the same key raises ``IdempotencyConflict``.

Documentation followed (read in 2025): Pay Score create / query / complete / cancel
(https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter6_1_1.shtml and the current pages
https://pay.weixin.qq.com/doc/v3/merchant/4012587900 "创建支付分订单" updated 2025.03.06,
https://pay.weixin.qq.com/doc/v3/merchant/4012587902 "查询支付分订单" updated 2024.12.10,
https://pay.weixin.qq.com/docs/merchant/apis/weixin-pay-score/service-order/complete-service-order.html,
https://pay.weixin.qq.com/docs/merchant/apis/weixin-pay-score/service-order/cancel-service-order.html),
signatures https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml, callbacks
https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_2.shtml, the trade bill
https://pay.weixin.qq.com/docs/merchant/apis/jsapi-payment/get-trade-bill.html (2025.01.10)
and its format https://pay.weixin.qq.com/docs/merchant/products/bill-download/format-trade.html
(2024.11.25), profit sharing https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter8_1_1.shtml.
docs/payments-wechat.md has the state machine and the production setup.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import SignType, WeChatPay, WeChatPayType  # type: ignore[import-untyped]
from wechatpayv3.core import Core  # type: ignore[import-untyped]

from cloud.config import ConfigError
from cloud.payments.provider import (
    Capture,
    Declined,
    Hold,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    Payout,
    ProviderEvent,
    ProviderUnavailable,
    Refund,
    StatementLine,
    Void,
)
from cloud.payments.webhooks import WebhookRejected

GATEWAY = "https://api.mch.weixin.qq.com"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
#: The notification headers, as WeChat Pay spells them (lookup is case-insensitive).
NOTIFICATION_HEADERS = (
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
)
#: Trade bill (ALL) detail columns, in order (format-trade.html, 2024.11.25).
TRADE_BILL_COLUMNS = (
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
)
TRADE_BILL_SUMMARY = "总交易单数"
_OUT_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
_SERIAL_HEX = re.compile(r"[0-9A-Fa-f]{1,64}")


@dataclass(frozen=True)
class WeChatPayScoreConfig:
    """What the adapter needs; each secret comes from a file (``*_file``) or from the environment
    variable named by ``*_env``. ``platform_public_key_id`` with ``platform_public_key_file`` or
    ``_env`` selects the WeChat Pay public key mode (微信支付公钥, new merchants);
    ``platform_cert_dir`` the platform certificate mode (平台证书: downloaded by the SDK from
    ``/v3/certificates`` and cached in that directory)."""

    mchid: str
    appid: str
    service_id: str
    merchant_serial_no: str
    notify_url: str
    private_key_file: str | None = None
    private_key_env: str | None = None
    apiv3_key_file: str | None = None
    apiv3_key_env: str | None = None
    platform_public_key_id: str | None = None
    platform_public_key_file: str | None = None
    platform_public_key_env: str | None = None
    platform_cert_dir: str | None = None
    gateway: str = GATEWAY
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    service_introduction: str = "共享充电宝租借"
    risk_fund_name: str = "DEPOSIT"
    risk_fund_description: str = "充电宝押金"
    fee_item_name: str = "充电宝租借费"
    fee_item_description: str = "按租借时长计费"
    cancel_reason: str = "租借未开始"
    sharing_description: str = "商户分成"
    confirm_ttl_s: float = 30 * 86400
    hold_ttl_s: float = 30 * 86400
    profit_sharing: bool = False
    notification_tolerance_s: float = 300.0
    out_no_namespace: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "[cloud.wechat]") -> WeChatPayScoreConfig:
        """Build from config values (e.g. a TOML table); unknown and missing keys raise ConfigError."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
        required = ("mchid", "appid", "service_id", "merchant_serial_no", "notify_url")
        missing = [k for k in required if not values.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (WeChat Pay Score needs them)")
        out: dict[str, Any] = {}
        for name, value in values.items():
            default = known[name].default
            try:
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError("expected true or false")
                    out[name] = value
                elif isinstance(default, float):
                    out[name] = float(value)
                else:
                    out[name] = None if value is None else str(value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: {name} = {value!r}: {e}") from e
        return cls(**out)


@dataclass(frozen=True)
class ServiceOrder:
    """WeChat's view of one Pay Score service order (one hold), from a query or a notification."""

    out_order_no: str
    state: str  # CREATED | DOING | DONE | REVOKED | EXPIRED
    state_description: str | None  # USER_CONFIRM | MCH_COMPLETE (DOING only)
    risk_amount: int
    total_amount: int | None
    collection_state: str | None  # USER_PAYING | USER_PAID
    paid_amount: int
    paying_amount: int
    transaction_id: str | None
    order_id: str | None
    openid: str | None

    @property
    def completed(self) -> bool:
        """The merchant completed it (the fee is fixed; WeChat collects or has collected it)."""
        return self.state == "DONE" or (self.state == "DOING" and self.state_description == "MCH_COMPLETE")

    @property
    def paid(self) -> bool:
        return self.collection_state == "USER_PAID" and self.transaction_id is not None

    @property
    def hold_status(self) -> str:
        """In the cloud's terms: pending | held | captured | voided | expired."""
        if self.state == "CREATED":
            return "pending"
        if self.state == "REVOKED":
            return "voided"
        if self.state == "EXPIRED":
            return "expired"
        if self.completed:
            return "captured"
        return "held"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ServiceOrder:
        collection = body.get("collection") or {}
        details = collection.get("details") or []
        transaction_id = next((d.get("transaction_id") for d in details if d.get("transaction_id")), None)
        return cls(
            out_order_no=str(body["out_order_no"]),
            state=str(body["state"]),
            state_description=body.get("state_description"),
            risk_amount=int((body.get("risk_fund") or {}).get("amount", 0)),
            total_amount=int(body["total_amount"]) if body.get("total_amount") is not None else None,
            collection_state=collection.get("state"),
            paid_amount=int(collection.get("paid_amount", 0) or 0),
            paying_amount=int(collection.get("paying_amount", 0) or 0),
            transaction_id=transaction_id,
            order_id=body.get("order_id"),
            openid=body.get("openid"),
        )


class _GatewayCore(Core):  # type: ignore[misc]
    """The SDK's core with its gateway replaced: ``Core.__init__`` sets the production host and,
    in platform certificate mode, downloads the certificates right away, so the host is set again
    just before that download."""

    def __init__(self, gateway: str, **kwargs: Any) -> None:
        self._gateway_override = gateway.rstrip("/")
        super().__init__(**kwargs)
        self._gate_way = self._gateway_override

    def _init_certificates(self) -> None:
        self._gate_way = self._gateway_override
        super()._init_certificates()


class _Client(WeChatPay):  # type: ignore[misc]
    """``WeChatPay`` built around :class:`_GatewayCore` (``WeChatPay.__init__`` would build the
    stock ``Core``, which talks to api.mch.weixin.qq.com before the gateway can be changed)."""

    def __init__(self, *, gateway: str, mchid: str, appid: str, notify_url: str, **core: Any) -> None:
        self._type = WeChatPayType.MINIPROG
        self._mchid = mchid
        self._appid = appid
        self._notify_url = notify_url
        self._partner_mode = False
        self._core = _GatewayCore(gateway, mchid=mchid, **core)


class WeChatPayScoreProvider:
    """:class:`cloud.payments.provider.RealProvider` over WeChat Pay Score (see module doc)."""

    name = "wechat"
    currency = "CNY"

    def __init__(
        self,
        config: WeChatPayScoreConfig,
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        env = os.environ if environ is None else environ
        for name in ("mchid", "appid", "service_id", "merchant_serial_no", "notify_url"):
            if not getattr(config, name):
                raise ConfigError(f"wechat: {name} is required")
        private_pem = _pem_private_key(_secret(config, "private_key", env))
        apiv3_key = _secret(config, "apiv3_key", env).strip()
        if len(apiv3_key.encode()) != 32:
            raise ConfigError(
                f"wechat: the APIv3 key must be 32 bytes (AES-256-GCM), got {len(apiv3_key.encode())}"
            )
        self._apiv3_key = apiv3_key
        public_key: str | None = None
        if config.platform_public_key_id:
            public_key = _pem_public_key(_secret(config, "platform_public_key", env))
        elif config.platform_public_key_file or config.platform_public_key_env:
            raise ConfigError("wechat: platform_public_key_id is required with a platform public key")
        elif not config.platform_cert_dir:
            raise ConfigError(
                "wechat: set platform_public_key_id with platform_public_key_file or _env (WeChat Pay "
                "public key mode) or platform_cert_dir (platform certificate mode)"
            )
        try:
            self._pay = _Client(
                gateway=config.gateway,
                mchid=config.mchid,
                appid=config.appid,
                notify_url=config.notify_url,
                cert_serial_no=config.merchant_serial_no,
                private_key=private_pem,
                apiv3_key=apiv3_key,
                cert_dir=None if public_key else config.platform_cert_dir,
                timeout=(config.connect_timeout_s, config.read_timeout_s),
                public_key=public_key,
                public_key_id=config.platform_public_key_id if public_key else None,
            )
        except requests.RequestException as e:
            raise ProviderUnavailable(
                f"WeChat Pay: the platform certificates could not be fetched: {e}"
            ) from e
        except Exception as e:  # the SDK raises bare Exception when no certificate could be loaded
            raise ProviderUnavailable(f"WeChat Pay: {e}") from e

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any],
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> WeChatPayScoreProvider:
        return cls(WeChatPayScoreConfig.from_mapping(values), clock=clock, environ=environ)

    # --- WeChat numbers derived from idempotency keys --------------------------------------

    def _out_no(self, prefix: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(f"{self.config.out_no_namespace}\n{idempotency_key}".encode()).hexdigest()
        return prefix + digest[: 32 - len(prefix)]

    def out_order_no(self, idempotency_key: str) -> str:
        """The service order number of a hold: 32 characters, the same for the same key forever."""
        return self._out_no("PS", idempotency_key)

    def out_refund_no(self, idempotency_key: str) -> str:
        return self._out_no("RF", idempotency_key)

    def out_sharing_no(self, idempotency_key: str) -> str:
        return self._out_no("PF", idempotency_key)

    # --- the Provider interface ------------------------------------------------------------

    def authorize(self, card_token: str, amount: int, currency: str, idempotency_key: str) -> Hold:
        """Create the service order; ``card_token`` is not sent (a need-confirm order carries no
        openid: WeChat learns who the renter is when they confirm, see ``hold.confirmed``)."""
        self._check_amount(amount, currency)
        no = self.out_order_no(idempotency_key)
        status, body = self._call(
            "create service order",
            self._pay.payscore_create,
            out_order_no=no,
            service_id=self.config.service_id,
            service_introduction=self.config.service_introduction,
            time_range={"start_time": "OnAccept"},
            risk_fund={
                "name": self.config.risk_fund_name,
                "amount": amount,
                "description": self.config.risk_fund_description,
            },
            attach=no,
            need_user_confirm=True,
            notify_url=self.config.notify_url,
        )
        if status == 200:
            order = ServiceOrder.from_json(body)
            package = body.get("package")
        else:
            code, message = _error(body)
            if status == 403 and code != "NO_AUTH":
                raise Declined(f"WeChat Pay Score refused the order: {code} {message}", "card_declined")
            found = self._find(no) if status in (400, 409) else None
            if found is None:
                raise _refusal("create service order", status, code, message)
            order, package = found, None
        if order.risk_amount != amount:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} (order {no}) holds {order.risk_amount}, not {amount}"
            )
        return self._hold(order, package)

    def capture(self, hold_ref: str, amount: int, idempotency_key: str) -> Capture:
        """Complete the order with the fee; WeChat collects it afterwards (``hold.captured``)."""
        self._check_amount(amount, self.currency)
        status, body = self._call(
            "complete service order",
            self._pay.payscore_complete,
            out_order_no=hold_ref,
            service_id=self.config.service_id,
            post_payments=[
                {
                    "name": self.config.fee_item_name,
                    "amount": amount,
                    "description": self.config.fee_item_description,
                    "count": 1,
                }
            ],
            total_amount=amount,
            profit_sharing=self.config.profit_sharing,
        )
        if status == 200:
            risk = int(body["risk_fund"]["amount"])
            total = int(body["total_amount"])
            return Capture(hold_ref, str(body.get("order_id") or hold_ref), total, risk - total)
        code, message = _error(body)
        order = self._find(hold_ref)
        if order is None:
            raise InvalidRequest(f"no such hold {hold_ref} at WeChat Pay ({code} {message})")
        if order.state == "EXPIRED":
            raise HoldExpired(f"service order {hold_ref} expired unconfirmed; nothing is reserved")
        if order.completed:
            if order.total_amount == amount:
                return Capture(hold_ref, order.order_id or hold_ref, amount, order.risk_amount - amount)
            raise InvalidRequest(
                f"service order {hold_ref} was completed with {order.total_amount}, not {amount}"
            )
        if order.state == "CREATED":
            raise InvalidRequest(
                f"service order {hold_ref}: the renter has not confirmed it ({code} {message})"
            )
        raise InvalidRequest(
            f"service order {hold_ref} is {order.state}: WeChat Pay refused ({code} {message})"
        )

    def void(self, hold_ref: str, idempotency_key: str) -> Void:
        """Cancel the order (only before completion); an expired one releases nothing."""
        order = self.service_order(hold_ref)
        if order.state == "EXPIRED":
            return Void(hold_ref, 0)
        if order.state == "REVOKED":
            return Void(hold_ref, order.risk_amount)
        if order.completed:
            raise InvalidRequest(f"service order {hold_ref} is completed: refund instead of cancelling")
        status, body = self._call(
            "cancel service order",
            self._pay.payscore_cancel,
            out_order_no=hold_ref,
            service_id=self.config.service_id,
            reason=self.config.cancel_reason,  # the same text on every repeat (WeChat: 重录需参数一致)
        )
        if status == 200:
            return Void(hold_ref, order.risk_amount)
        code, message = _error(body)
        order = self.service_order(hold_ref)
        if order.state == "REVOKED":
            return Void(hold_ref, order.risk_amount)
        if order.state == "EXPIRED":
            return Void(hold_ref, 0)
        raise InvalidRequest(f"service order {hold_ref} is {order.state}: cancel refused ({code} {message})")

    def refund(self, hold_ref: str, amount: int, idempotency_key: str) -> Refund:
        """Refund part of a collected order. ``refunded_total`` is this refund's amount: WeChat's
        answers carry no cumulative figure (the cloud keeps the sum, ``rentals.refunded``)."""
        self._check_amount(amount, self.currency)
        order = self.service_order(hold_ref)
        if not order.paid:
            raise InvalidRequest(
                f"service order {hold_ref} has not been collected (state {order.state}, collection "
                f"{order.collection_state}): nothing to refund yet"
            )
        no = self.out_refund_no(idempotency_key)
        status, body = self._call(
            "refund",
            self._pay.payscore_refund,
            transaction_id=order.transaction_id,
            out_refund_no=no,
            amount={"refund": amount, "total": order.paid_amount, "currency": self.currency},
            notify_url=self.config.notify_url,
        )
        if status != 200:
            code, message = _error(body)
            q_status, q_body = self._call("query refund", self._pay.payscore_refund_query, out_refund_no=no)
            if q_status != 200:
                raise _refusal("refund", status, code, message)
            body = q_body
        refunded = int(body["amount"]["refund"])
        if refunded != amount:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} (refund {no}) refunded {refunded}, not {amount}"
            )
        return Refund(hold_ref, str(body["refund_id"]), amount, amount)

    # --- RealProvider ----------------------------------------------------------------------

    def hold_status(self, hold_ref: str) -> str:
        return self.service_order(hold_ref).hold_status

    def service_order(self, hold_ref: str) -> ServiceOrder:
        """Query the order; raises InvalidRequest for one WeChat does not know."""
        order = self._find(hold_ref)
        if order is None:
            raise InvalidRequest(f"no such hold {hold_ref} at WeChat Pay")
        return order

    def reconcile(self, hold_ref: str) -> ProviderEvent | None:
        """The event the order's current state stands for, from a query (WeChat sends no
        notification for an expired order nor for a collection that failed; and a merchant
        must query when notifications stop coming). The id is derived from the state, so
        reconciling twice yields the same event."""
        order = self.service_order(hold_ref)
        kind = {
            "pending": None,
            "held": "hold.confirmed",
            "voided": "hold.voided",
            "expired": "hold.expired",
        }.get(order.hold_status)
        amount: int | None = order.risk_amount
        if order.hold_status == "captured":
            if order.paid:
                kind, amount = "hold.captured", order.paid_amount
            else:
                kind, amount = "payment.failed", order.paying_amount or order.total_amount
        if kind is None:
            return None
        what = ":".join(str(x) for x in (order.state, order.state_description, order.collection_state))
        return ProviderEvent(
            event_id=f"query:{hold_ref}:{what}",
            kind=kind,
            hold_ref=hold_ref,
            amount=amount,
            currency=self.currency,
            provider_type=what,
            data={"order_id": order.order_id, "transaction_id": order.transaction_id, "openid": order.openid},
        )

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        """Verify (platform signature, timestamp within ``notification_tolerance_s``, our merchant)
        and decrypt (AES-256-GCM, APIv3 key) with the SDK's callback helper, then map."""
        given = {k.lower(): v for k, v in headers.items()}
        missing = [h for h in NOTIFICATION_HEADERS if not given.get(h.lower())]
        if missing:
            raise WebhookRejected(f"WeChat Pay notification without {', '.join(missing)}")
        canonical = {h: given[h.lower()] for h in NOTIFICATION_HEADERS}
        if canonical["Wechatpay-Signature-Type"] != SIGNATURE_TYPE:
            raise WebhookRejected(f"unsupported signature type {canonical['Wechatpay-Signature-Type']!r}")
        try:
            sent_at = int(canonical["Wechatpay-Timestamp"])
        except ValueError as e:
            raise WebhookRejected("Wechatpay-Timestamp is not a number") from e
        if abs(self.clock() - sent_at) > self.config.notification_tolerance_s:
            raise WebhookRejected(
                f"Wechatpay-Timestamp {sent_at} is {self.clock() - sent_at:.0f} s from now "
                f"(tolerance {self.config.notification_tolerance_s:.0f} s)"
            )
        serial = canonical["Wechatpay-Serial"]
        if self.config.platform_public_key_id:
            if serial != self.config.platform_public_key_id:
                raise WebhookRejected(f"signed with an unknown WeChat Pay public key {serial!r}")
        elif not _SERIAL_HEX.fullmatch(serial):
            raise WebhookRejected(f"Wechatpay-Serial {serial!r} is not a certificate serial number")
        try:
            result = self._pay.callback(canonical, body)
        except requests.RequestException as e:  # an unknown serial makes the SDK fetch certificates
            raise ProviderUnavailable(f"WeChat Pay certificates could not be fetched: {e}") from e
        except Exception as e:  # the SDK raises bare Exception (algorithm) and ValueError (JSON)
            raise WebhookRejected(f"WeChat Pay notification refused: {e}") from e
        if not result or not isinstance(result.get("resource"), dict):
            raise WebhookRejected(
                "WeChat Pay notification refused: the signature does not verify with the platform key, "
                "or the resource does not decrypt under the APIv3 key"
            )
        return self._event(result)

    def statement(self, day: date) -> list[StatementLine]:
        """Trade bill lines whose time falls in ``day`` (UTC): WeChat cuts bills at midnight in
        Beijing, so the bills of ``day`` and the day after are read and filtered (complete from
        10:00 Beijing time two days after ``day``; before that ProviderUnavailable)."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        ready = datetime(day.year, day.month, day.day, 10, tzinfo=BEIJING) + timedelta(days=2)
        if self.clock() < ready.timestamp():
            raise ProviderUnavailable(
                f"the statement of {day} (UTC) needs the Beijing bills of {day} and the day after; WeChat "
                f"makes a bill from 09:00 the next day: ask again after {ready.isoformat()}"
            )
        lines: list[StatementLine] = []
        for bill_day in (day, day + timedelta(days=1)):
            lines += [line for line in self._trade_bill(bill_day) if start <= line.at < start + 86400]
        return sorted(lines, key=lambda line: (line.at, line.provider_ref))

    def payout(
        self, destination: str, amount: int, currency: str, hold_ref: str | None, idempotency_key: str
    ) -> Payout:
        """Profit sharing of ``hold_ref``'s payment to ``destination`` (a merchant id, or
        ``MERCHANT_ID:<mchid>`` / ``PERSONAL_OPENID:<openid>``), added as a receiver beforehand
        (:meth:`add_receiver`). Unsplit money is unfrozen at once (one share per payment)."""
        self._check_amount(amount, currency)
        if not hold_ref:
            raise InvalidRequest("WeChat profit sharing splits one payment: hold_ref is required")
        order = self.service_order(hold_ref)
        if not order.paid:
            raise InvalidRequest(f"service order {hold_ref} has not been collected: nothing to share")
        kind, account = _receiver(destination)
        no = self.out_sharing_no(idempotency_key)
        status, body = self._call(
            "profit sharing",
            self._pay.profitsharing_order,
            transaction_id=order.transaction_id,
            out_order_no=no,
            receivers=[
                {
                    "type": kind,
                    "account": account,
                    "amount": amount,
                    "description": self.config.sharing_description,
                }
            ],
            unfreeze_unsplit=True,
        )
        if status != 200:
            code, message = _error(body)
            q_status, q_body = self._call(
                "query profit sharing", self._pay.profitsharing_order_query, order.transaction_id, no
            )
            if q_status != 200:
                raise _refusal("profit sharing", status, code, message)
            body = q_body
        return self._payout(body, destination, amount, idempotency_key)

    # --- more of WeChat ----------------------------------------------------------------------

    def payout_status(self, destination: str, amount: int, hold_ref: str, idempotency_key: str) -> Payout:
        """The profit sharing made by :meth:`payout` under this key, as WeChat sees it now (the
        payer gets no notification of the result: it queries)."""
        order = self.service_order(hold_ref)
        if order.transaction_id is None:
            raise InvalidRequest(f"service order {hold_ref} has no payment")
        status, body = self._call(
            "query profit sharing",
            self._pay.profitsharing_order_query,
            order.transaction_id,
            self.out_sharing_no(idempotency_key),
        )
        if status != 200:
            code, message = _error(body)
            raise _refusal("query profit sharing", status, code, message)
        return self._payout(body, destination, amount, idempotency_key)

    def add_receiver(self, destination: str, name: str, relation_type: str = "PARTNER") -> None:
        """Register a profit-sharing receiver (once per merchant; ``name``: the merchant's full
        name, sent encrypted with the platform key by the SDK)."""
        kind, account = _receiver(destination)
        status, body = self._call(
            "add profit-sharing receiver",
            self._pay.profitsharing_add_receiver,
            account_type=kind,
            account=account,
            relation_type=relation_type,
            name=name,
        )
        if status != 200:
            code, message = _error(body)
            raise _refusal("add profit-sharing receiver", status, code, message)

    # --- internals ---------------------------------------------------------------------------

    def _call(
        self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        """One SDK call: transport failures, 5xx, 429 and an answer whose signature does not
        verify raise ProviderUnavailable (repeat with the same key); other answers are returned."""
        try:
            status, content = fn(*args, **kwargs)
        except requests.RequestException as e:
            raise ProviderUnavailable(f"WeChat Pay did not answer ({what}): {e}") from e
        except Exception as e:
            text = str(e)
            if "verify the signature" in text or "does not support this algorithm" in text:
                raise ProviderUnavailable(
                    f"WeChat Pay's answer ({what}) failed signature verification: {text}",
                    "response_unverified",
                ) from e
            raise
        body = _json_body(content)
        if status >= 500 or status == 429:
            code, message = _error(body)
            raise ProviderUnavailable(f"WeChat Pay answered {status} {code} ({what}): {message}")
        if status == 401:
            code, message = _error(body)
            raise PaymentError(
                f"WeChat Pay refused our signature ({what}): {code} {message}; check the merchant key, "
                "its serial number and the clock",
                "wechat_sign_error",
            )
        if status == 200 and isinstance(content, bytes):
            return status, {"_bytes": content}
        return status, body

    def _find(self, hold_ref: str) -> ServiceOrder | None:
        if not _OUT_NO.fullmatch(hold_ref):
            return None
        status, body = self._call(
            "query service order",
            self._pay.payscore_query,
            service_id=self.config.service_id,
            out_order_no=hold_ref,
        )
        if status == 404:
            return None
        if status != 200:
            code, message = _error(body)
            raise _refusal("query service order", status, code, message)
        return ServiceOrder.from_json(body)

    def _hold(self, order: ServiceOrder, package: str | None) -> Hold:
        now = self.clock()
        if order.state == "CREATED":
            action = self._client_action(package) if package else None
            return Hold(
                order.out_order_no,
                order.risk_amount,
                self.currency,
                now + self.config.confirm_ttl_s,
                status="pending",
                client_action=action,
            )
        if order.hold_status == "held":
            return Hold(order.out_order_no, order.risk_amount, self.currency, now + self.config.hold_ttl_s)
        if order.hold_status == "expired":
            raise HoldExpired(f"service order {order.out_order_no} expired before the renter confirmed it")
        raise InvalidRequest(f"service order {order.out_order_no} is already {order.hold_status}")

    def _client_action(self, package: str) -> dict[str, Any]:
        """What the phone passes to ``wx.openBusinessView`` (mini program) or
        ``WXOpenBusinessView`` (app): businessType ``wxpayScoreUse`` and the signed query."""
        extra = {
            "mch_id": self.config.mchid,
            "package": package,
            "timestamp": str(int(self.clock())),
            "nonce_str": secrets.token_hex(16),
            "sign_type": "HMAC-SHA256",
        }
        extra["sign"] = self._pay.sign(dict(extra), sign_type=SignType.HMAC_SHA256)
        return {
            "businessType": "wxpayScoreUse",
            "package": package,
            "extraData": extra,
            "query": urlencode(extra),
        }

    def _event(self, result: Mapping[str, Any]) -> ProviderEvent:
        wx_event = str(result.get("event_type", ""))
        event_id = str(result.get("id", ""))
        res: Mapping[str, Any] = result["resource"]
        if not event_id:
            raise WebhookRejected("WeChat Pay notification without an id")
        if res.get("mchid") not in (None, self.config.mchid):
            raise WebhookRejected(f"notification for merchant {res.get('mchid')}, not {self.config.mchid}")
        if wx_event.startswith("PAYSCORE."):
            if res.get("service_id") != self.config.service_id or res.get("appid") != self.config.appid:
                raise WebhookRejected("Pay Score notification for another service or app")
            order = ServiceOrder.from_json(res)
            data = {"order_id": order.order_id, "openid": order.openid, "state": order.state}
            if wx_event == "PAYSCORE.USER_CONFIRM":
                return ProviderEvent(
                    event_id,
                    "hold.confirmed",
                    order.out_order_no,
                    order.risk_amount,
                    self.currency,
                    wx_event,
                    data,
                )
            if wx_event == "PAYSCORE.USER_PAID":
                data["transaction_id"] = order.transaction_id
                return ProviderEvent(
                    event_id,
                    "hold.captured",
                    order.out_order_no,
                    order.paid_amount,
                    self.currency,
                    wx_event,
                    data,
                )
        elif wx_event.startswith("REFUND."):
            amount = res.get("amount") or {}
            hold_ref = res.get("out_trade_no") if str(res.get("out_trade_no", "")).startswith("PS") else None
            data = {
                "refund_id": res.get("refund_id"),
                "out_refund_no": res.get("out_refund_no"),
                "transaction_id": res.get("transaction_id"),
                "refund_status": res.get("refund_status"),
            }
            kind = "refund.succeeded" if wx_event == "REFUND.SUCCESS" else "payment.failed"
            if kind == "payment.failed":
                data["operation"] = "refund"  # REFUND.ABNORMAL / REFUND.CLOSED: no refund.failed kind
            return ProviderEvent(
                event_id, kind, hold_ref, int(amount.get("refund", 0)), self.currency, wx_event, data
            )
        elif wx_event.startswith("COMPLAINT."):
            return self._complaint_event(event_id, wx_event, res)
        raise WebhookRejected(f"WeChat Pay notification {wx_event!r} is not one this adapter handles")

    def _complaint_event(self, event_id: str, wx_event: str, res: Mapping[str, Any]) -> ProviderEvent:
        """A consumer complaint (消费者投诉): the notification names it, the details are queried."""
        complaint_id = str(res.get("complaint_id") or "")
        if not complaint_id:
            raise WebhookRejected("complaint notification without complaint_id")
        status, detail = self._call("query complaint", self._pay.complaint_detail_query, complaint_id)
        if status != 200:
            code, message = _error(detail)
            raise _refusal("query complaint", status, code, message)
        services = detail.get("service_order_info") or []
        orders = detail.get("complaint_order_info") or []
        hold_ref = next((s.get("out_order_no") for s in services if s.get("out_order_no")), None)
        amount = detail.get("apply_refund_amount") or sum(int(o.get("amount", 0)) for o in orders) or None
        # the details are as of now: a late COMPLAINT.CREATE still opens the dispute
        closed = wx_event != "COMPLAINT.CREATE" and detail.get("complaint_state") == "PROCESSED"
        data: dict[str, Any] = {
            "complaint_id": complaint_id,
            "action_type": res.get("action_type"),
            "complaint_state": detail.get("complaint_state"),
            "transaction_ids": [o.get("transaction_id") for o in orders],
            "problem_description": detail.get("problem_description"),
        }
        if closed:
            data["outcome"] = "lost" if detail.get("complaint_full_refunded") else "won"
        kind = "dispute.closed" if closed else "dispute.opened"
        return ProviderEvent(event_id, kind, hold_ref, amount, self.currency, wx_event, data)

    def _payout(self, body: Mapping[str, Any], destination: str, amount: int, key: str) -> Payout:
        kind, account = _receiver(destination)
        receivers = [r for r in body.get("receivers") or [] if r.get("account") == account]
        if not receivers or int(receivers[0].get("amount", -1)) != amount or receivers[0].get("type") != kind:
            raise IdempotencyConflict(
                f"idempotency key {key!r} (profit sharing {body.get('out_order_no')}) shared "
                f"{[(r.get('account'), r.get('amount')) for r in body.get('receivers') or []]}, "
                f"not {amount} to {destination}"
            )
        result = receivers[0].get("result")
        status = {"SUCCESS": "paid", "CLOSED": "failed"}.get(str(result), "pending")
        return Payout(
            str(body.get("order_id") or body.get("out_order_no")), destination, amount, self.currency, status
        )

    def _trade_bill(self, bill_day: date) -> list[StatementLine]:
        status, body = self._call(
            "trade bill",
            self._pay.trade_bill,
            bill_date=bill_day.isoformat(),
            bill_type="ALL",
            tar_type="GZIP",
        )
        if status != 200:
            code, message = _error(body)
            if code == "NO_STATEMENT_EXIST":
                return []
            if code == "STATEMENT_CREATING":
                raise ProviderUnavailable(f"WeChat Pay is still making the bill of {bill_day}: {message}")
            raise _refusal("trade bill", status, code, message)
        d_status, file = self._call("download trade bill", self._pay.download_bill, body["download_url"])
        content = file.get("_bytes")
        if d_status != 200 or not isinstance(content, bytes):
            code, message = _error(file)
            raise ProviderUnavailable(f"WeChat Pay bill download failed: {d_status} {code} {message}")
        if body.get("hash_type") == "SHA1" and hashlib.sha1(content).hexdigest() != body.get("hash_value"):
            raise ProviderUnavailable(f"the bill of {bill_day} does not match its SHA1: download it again")
        if content[:2] == b"\x1f\x8b":
            content = gzip.decompress(content)
        return parse_trade_bill(content.decode("utf-8-sig"))

    def _check_amount(self, amount: int, currency: str) -> None:
        if currency != self.currency:
            raise InvalidRequest(f"WeChat Pay Score takes {self.currency} only, not {currency}")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidRequest(f"amount must be a positive integer of fen, got {amount!r}")


# --- the trade bill ----------------------------------------------------------------------------


def parse_trade_bill(text: str) -> list[StatementLine]:
    """Lines of a trade bill of type ALL: every field after the first line starts with a "`";
    money is yuan with 2 decimals (fees: 5), times are Beijing time. A payment row gives a
    ``capture`` line (应结订单金额) and a ``fee`` line (手续费, rounded half up to fen); a refund
    row a ``refund`` line (退款金额) and a ``fee`` line giving back the fee. The summary's count
    must match the rows (a truncated file is refused)."""
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows or rows[0].split(",")[0] != TRADE_BILL_COLUMNS[0]:
        raise ProviderUnavailable("the trade bill does not start with its header row")
    header = rows[0].split(",")
    lines: list[StatementLine] = []
    count = 0
    summary: list[str] | None = None
    for i, row in enumerate(rows[1:], start=1):
        if row.startswith(TRADE_BILL_SUMMARY):
            summary = rows[i + 1][1:].split(",`") if i + 1 < len(rows) else None
            break
        if not row.startswith("`"):
            raise ProviderUnavailable(f"trade bill row {i} does not start with '`'")
        count += 1
        lines += _bill_lines(dict(zip(header, row[1:].split(",`"), strict=False)))
    if summary is None or int(summary[0]) != count:
        raise ProviderUnavailable(f"the trade bill's summary does not match its {count} rows (truncated?)")
    return lines


def _bill_lines(row: Mapping[str, str]) -> list[StatementLine]:
    at = datetime.strptime(row["交易时间"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING).timestamp()
    currency = row.get("货币种类") or "CNY"
    attach = row.get("商户数据包", "")
    hold_ref = attach if _OUT_NO.fullmatch(attach) else (row.get("商户订单号") or None)
    fee = -_fen(row.get("手续费", "0"), rounding=True)
    status = row.get("交易状态")
    if status == "SUCCESS":
        ref = row["微信订单号"]
        out = [StatementLine(ref, "capture", _fen(row["应结订单金额"]), currency, at, hold_ref)]
    elif status == "REFUND":
        ref = row["微信退款单号"]
        out = [StatementLine(ref, "refund", -_fen(row["退款金额"]), currency, at, hold_ref)]
    else:
        return []
    if fee:
        out.append(StatementLine(f"{ref}:fee", "fee", fee, currency, at, hold_ref))
    return out


def _fen(yuan: str, rounding: bool = False) -> int:
    try:
        value = Decimal(yuan.strip() or "0") * 100
    except InvalidOperation as e:
        raise ProviderUnavailable(f"not an amount in the trade bill: {yuan!r}") from e
    if rounding:
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if value != value.to_integral_value():
        raise ProviderUnavailable(f"amount {yuan!r} is not whole fen")
    return int(value)


# --- helpers -----------------------------------------------------------------------------------


def _secret(config: WeChatPayScoreConfig, name: str, env: Mapping[str, str]) -> str:
    path = getattr(config, f"{name}_file")
    var = getattr(config, f"{name}_env")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"wechat: {name}_file {path}: {e.strerror}") from e
    if var:
        value = env.get(var)
        if not value:
            raise ConfigError(f"wechat: environment variable {var} (named by {name}_env) is not set")
        return value
    raise ConfigError(f"wechat: set {name}_file or {name}_env")


def _pem_private_key(pem: str) -> str:
    """The merchant API key as PKCS#8 PEM (the SDK only wraps bare base64 in PKCS#8 headers)."""
    try:
        # (the SDK loads it again with OpenSSL's full RSA consistency check: once is enough)
        key = serialization.load_pem_private_key(
            pem.strip().encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(f"wechat: the merchant private key is not an unencrypted PEM key: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ConfigError("wechat: the merchant private key must be RSA of at least 2048 bits")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_public_key(pem: str) -> str:
    try:
        key = serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError) as e:
        raise ConfigError(f"wechat: the WeChat Pay public key is not a PEM public key: {e}") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("wechat: the WeChat Pay public key must be RSA")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _json_body(content: Any) -> dict[str, Any]:
    if isinstance(content, bytes):
        try:
            content = content.decode()
        except UnicodeDecodeError:
            return {}
    if not content:
        return {}
    try:
        parsed = json.loads(content)
    except ValueError:
        return {"message": str(content)[:200]}
    return parsed if isinstance(parsed, dict) else {}


def _error(body: Mapping[str, Any]) -> tuple[str, str]:
    return str(body.get("code", "")), str(body.get("message", ""))


def _refusal(what: str, status: int, code: str, message: str) -> PaymentError:
    if status == 404:
        return InvalidRequest(f"WeChat Pay ({what}): not found: {code} {message}")
    if status in (400, 403, 409):
        return InvalidRequest(f"WeChat Pay refused {what}: {status} {code} {message}")
    return PaymentError(f"WeChat Pay answered {what} with {status} {code} {message}", "wechat_error")


def _receiver(destination: str) -> tuple[str, str]:
    kind, _, account = destination.rpartition(":")
    kind = kind or "MERCHANT_ID"
    if kind not in ("MERCHANT_ID", "PERSONAL_OPENID") or not account:
        raise InvalidRequest(
            f"payout destination {destination!r}: expected a merchant id, MERCHANT_ID:<mchid> or PERSONAL_OPENID:<openid>"
        )
    return kind, account
