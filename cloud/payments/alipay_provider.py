"""Alipay fund authorization (资金预授权, credit-based 免押) as a :class:`RealProvider`.

The flow (docs/payments-alipay.md has the state table and the production set-up):

1. ``authorize`` signs an ``alipay.fund.auth.order.app.freeze`` order string (the SDK signs it
   locally, as Alipay's ``sdkExecute``: no request to Alipay) with the 免押 parameters
   (``extra_param`` {"category", "serviceId"}); the hold is ``pending`` and ``client_action``
   is ``{"order_str": ...}`` for the renter's Alipay app (``my.tradePay`` / the app SDK).
2. The renter confirms in Alipay; Alipay notifies ``fund_auth_freeze`` (status SUCCESS, auth_no,
   operation_id) -> ``hold.confirmed``. ``hold_status`` asks
   ``alipay.fund.auth.operation.detail.query``; ``app_result`` verifies what the app got back
   (signed by Alipay), which is where a refused freeze (credit or risk) shows.
3. ``capture`` is ``alipay.trade.pay`` against the auth_no (product_code PREAUTH_PAY,
   auth_confirm_mode COMPLETE: the rest is unfrozen at once); ``void`` is
   ``alipay.fund.auth.order.unfreeze`` of the whole rest (``alipay.fund.auth.operation.cancel``
   while the renter has not confirmed); ``refund`` is ``alipay.trade.refund``;
   ``payout`` is ``alipay.trade.order.settle`` (商家分账) of the paid trade; ``statement`` reads
   the trade bill (``alipay.data.dataservice.bill.downloadurl.query``, a zip of GBK CSV).

Idempotency: every Alipay number is derived from the idempotency key (a SHA-256 digest), so a
call repeated after a crash or a timeout, by any process, sends the same numbers and Alipay
answers with the first result. The hold's own numbers come from the authorize key; the one
payment and the one unfreeze of a hold are numbered from the hold (the interface passes only
``hold_ref`` to ``refund`` and ``payout``, which must find the payment), and the void's remark
carries its key's digest. Disputes: Alipay documents none for this flow (no chargebacks).

The SDK is python-alipay-sdk 3.4: it signs requests (RSA2) and verifies each response's ``sign``
with the Alipay public key. It has no method for the fund-auth calls (nor a usable one for a
pre-auth ``alipay.trade.pay``: its ``api_alipay_trade_pay`` requires a bar code), nor for
settle.query and the bill URL, so those go through its generic ``server_api`` / ``client_api``,
which sign and verify the same way; refunds, their query, alipay.trade.query and the settle use
its ``api_alipay_*`` methods.
Notifications are verified with its ``AliPay.verify``.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import inspect
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from alipay import AliPay  # type: ignore[import-untyped]
from alipay.exceptions import AliPayException, AliPayValidationError  # type: ignore[import-untyped]
from alipay.utils import AliPayConfig  # type: ignore[import-untyped]

from cloud.config import ConfigError
from cloud.errors import CloudError
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

PRODUCTION_GATEWAY = "https://openapi.alipay.com/gateway.do"
SANDBOX_GATEWAY = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
PRODUCT_CODE = "PREAUTH_PAY"  # 预授权支付 (older integrations: PRE_AUTH_ONLINE)
CST = timezone(timedelta(hours=8))  # Alipay's times and bill dates are Beijing time
HOLD_PREFIX = "PBH"  # out_order_no = hold_ref; "PBF" freeze out_request_no; "PBR" refunds; "PBS" settles
_REF = re.compile(r"^PBH[0-9a-f]{29}$")
_FREEZE_RESPONSE = "alipay_fund_auth_order_app_freeze_response"
_UNAVAILABLE_CODES = ("20000",)  # "Service Currently Unavailable" (isp.unknow-error, aop.ACQ.SYSTEM_ERROR)
_INSUFFICIENT = ("ACQ.BUYER_BALANCE_NOT_ENOUGH", "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH")
_REFUSED = ("ACQ.PAYMENT_REQUEST_HAS_RISK", "ACQ.ZM_CREDIT_AUTH_FAIL", "ACQ.BUYER_ENABLE_STATUS_FORBID")


class AlipayDeclined(Declined):
    """A refusal by Alipay; ``code`` is the cloud's (card_declined, insufficient_funds) and
    ``provider_code`` Alipay's sub_code (e.g. ACQ.BUYER_BALANCE_NOT_ENOUGH)."""

    status = 500  # a caller turns it into its refusal (a refused rental); as Declined
    code = "card_declined"

    def __init__(self, message: str, code: str, provider_code: str) -> None:
        super().__init__(message, code)
        self.provider_code = provider_code


class _Refused(CloudError):
    """An Alipay answer with a code other than 10000 (signed or not); internal: mapped to the
    provider errors before it leaves the adapter."""

    status = 500
    code = "alipay_refused"

    def __init__(self, method: str, node: Mapping[str, Any]) -> None:
        self.method = method
        self.code = str(node.get("code", ""))
        self.sub_code = str(node.get("sub_code", ""))
        self.sub_msg = str(node.get("sub_msg", "") or node.get("msg", ""))
        super().__init__(f"{method}: {self.code} {self.sub_code} {self.sub_msg}".strip())


class _Unsigned(CloudError):
    """An Alipay answer without a signature (internal, like _Refused)."""

    status = 500
    code = "alipay_unsigned"

    def __init__(self, node: Mapping[str, Any]) -> None:
        super().__init__(str(node))
        self.node = node


class _AlipayClient(AliPay):  # type: ignore[misc]
    """python-alipay-sdk's client pointed at ``gateway``, with Beijing-time timestamps.

    Two changes, both through the SDK's own extension points: ``build_body`` writes the
    timestamp in Beijing time from ``clock`` (the SDK writes the server's local time), and an
    unsigned refusal (the gateway does not sign e.g. 40002 isv.invalid-signature; the SDK then
    raises a bare AliPayException holding the raw text) is handed on as its parsed node.
    """

    def __init__(self, *, gateway: str, clock: Callable[[], float], timeout_s: float, **kwargs: Any) -> None:
        super().__init__(sign_type="RSA2", config=AliPayConfig(timeout=timeout_s), **kwargs)
        self._gateway = gateway  # the SDK's base URL (set from debug= in its __init__)
        self._clock = clock

    def build_body(self, method: str, biz_content: Any = None, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = super().build_body(method, biz_content, **kwargs)
        data["timestamp"] = datetime.fromtimestamp(self._clock(), CST).strftime("%Y-%m-%d %H:%M:%S")
        return data

    def _verify_and_return_sync_response(self, raw_string: str, response_type: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = super()._verify_and_return_sync_response(raw_string, response_type)
        except AliPayException as e:
            try:
                doc = json.loads(raw_string)
            except ValueError:
                raise e from None
            node = (doc.get(response_type) or doc.get("error_response")) if isinstance(doc, dict) else None
            raise _Unsigned(node if isinstance(node, dict) else {"code": "", "msg": raw_string}) from e
        return result


class AlipayFundAuthProvider:
    """Alipay 资金预授权 (credit 免押) through python-alipay-sdk (see module doc)."""

    name = "alipay"

    def __init__(
        self,
        *,
        app_id: str,
        payee_user_id: str,
        notify_url: str,
        service_id: str,
        category: str,
        app_private_key_file: str | None = None,
        app_private_key_env: str | None = None,
        alipay_public_key_file: str | None = None,
        alipay_public_key_env: str | None = None,
        gateway: str = PRODUCTION_GATEWAY,
        timeout_s: float = 15.0,
        hold_ttl_s: float = 30 * 86400,
        confirm_timeout_s: int = 15 * 60,
        order_title: str = "充电宝租借免押",
        subject: str = "充电宝租金",
        deposit_product_mode: str = "DEPOSIT_ONLY",
        rent_description: str = "",
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        missing = [
            n
            for n, v in (
                ("app_id", app_id),
                ("payee_user_id", payee_user_id),
                ("notify_url", notify_url),
                ("service_id", service_id),
                ("category", category),
                ("gateway", gateway),
            )
            if not v
        ]
        if missing:
            raise ConfigError(f"alipay provider: missing {', '.join(missing)}")
        if deposit_product_mode not in ("DEPOSIT_ONLY", "POSTPAY", "POSTPAY_UNCERTAIN"):
            raise ConfigError(
                f"alipay provider: deposit_product_mode {deposit_product_mode!r} is not one of "
                "DEPOSIT_ONLY, POSTPAY, POSTPAY_UNCERTAIN"
            )
        if deposit_product_mode != "DEPOSIT_ONLY" and not rent_description:
            raise ConfigError(
                f"alipay provider: deposit_product_mode {deposit_product_mode} needs rent_description "
                "(the post_payments description the renter sees, e.g. 1.50元/30分钟，99元封顶)"
            )
        if confirm_timeout_s < 60 or hold_ttl_s <= 0 or timeout_s <= 0:
            raise ConfigError(
                "alipay provider: confirm_timeout_s must be >= 60, hold_ttl_s and timeout_s > 0"
            )
        env = os.environ if environ is None else environ
        private = _secret("app private key", app_private_key_file, app_private_key_env, env)
        public = _secret("Alipay public key", alipay_public_key_file, alipay_public_key_env, env)
        try:
            self._sdk = _AlipayClient(
                gateway=gateway,
                clock=clock,
                timeout_s=timeout_s,
                appid=app_id,
                app_notify_url=notify_url,
                app_private_key_string=_pem(private, "PRIVATE KEY"),
                alipay_public_key_string=_pem(public, "PUBLIC KEY"),
            )
        except (ValueError, IndexError, TypeError) as e:
            raise ConfigError(
                f"alipay provider: a key is not a valid RSA key in PEM or base64 form: {e}"
            ) from e
        self.app_id = app_id
        self.payee_user_id = payee_user_id
        self.notify_url = notify_url
        self.service_id = service_id
        self.category = category
        self.timeout_s = timeout_s
        self.hold_ttl_s = hold_ttl_s
        self.confirm_timeout_s = confirm_timeout_s
        self.order_title = order_title
        self.subject = subject
        self.deposit_product_mode = deposit_product_mode
        self.rent_description = rent_description
        self.clock = clock

    @classmethod
    def from_config(
        cls, values: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> AlipayFundAuthProvider:
        """Build from a config table (keys as the constructor's arguments); unknown keys refused."""
        known = set(inspect.signature(cls).parameters) - {"environ", "clock"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"alipay provider: unknown config keys {', '.join(unknown)}")
        required = ("app_id", "payee_user_id", "notify_url", "service_id", "category")
        missing = [k for k in required if not values.get(k)]
        if missing:
            raise ConfigError(f"alipay provider: missing {', '.join(missing)}")
        return cls(**dict(values), environ=environ)

    # --- Provider ------------------------------------------------------------------------

    def authorize(self, card_token: str, amount: int, currency: str, idempotency_key: str) -> Hold:
        """A pending freeze of ``amount`` fen; ``card_token`` is unused (the renter confirms in Alipay)."""
        _check_cny(currency)
        if not isinstance(amount, int) or amount <= 0:
            raise InvalidRequest(f"hold amount must be a positive number of fen, got {amount!r}")
        hold_ref = HOLD_PREFIX + _digest(idempotency_key)
        d = self._operation(hold_ref, _freeze_no(hold_ref), "FREEZE")
        if d is not None:
            if _fen(d.get("total_freeze_amount") or d.get("amount")) != amount:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} froze {d.get('total_freeze_amount')} yuan "
                    f"(order {hold_ref}), not {_yuan(amount)}"
                )
            if d.get("status") == "SUCCESS":  # frozen once: held, captured or ended since
                return Hold(hold_ref, amount, "CNY", self._auth_expiry(d), "held")
            if d.get("order_status") == "CLOSED":
                raise HoldExpired(
                    f"freeze order {hold_ref} closed without a freeze (not confirmed in time, or cancelled)"
                )
        biz: dict[str, Any] = {
            "out_order_no": hold_ref,
            "out_request_no": _freeze_no(hold_ref),
            "order_title": self.order_title,
            "amount": _yuan(amount),
            "product_code": PRODUCT_CODE,
            "payee_user_id": self.payee_user_id,
            "timeout_express": f"{max(1, self.confirm_timeout_s // 60)}m",
            "extra_param": json.dumps(
                {"category": self.category, "serviceId": self.service_id}, separators=(",", ":")
            ),
            "deposit_product_mode": self.deposit_product_mode,
        }
        if self.deposit_product_mode != "DEPOSIT_ONLY":
            biz["post_payments"] = [{"name": self.subject, "description": self.rent_description}]
        order_str = self._sdk.client_api("alipay.fund.auth.order.app.freeze", biz, notify_url=self.notify_url)
        return Hold(
            hold_ref,
            amount,
            "CNY",
            self.clock() + self.hold_ttl_s,  # a lower bound: the authorization's life starts at the freeze
            "pending",
            {"order_str": order_str, "out_order_no": hold_ref},
        )

    def app_result(self, hold_ref: str, result: str) -> Hold:
        """Verify what the renter's Alipay app got back (``res.result`` of my.tradePay, signed by
        Alipay) and return the hold now; raises :class:`AlipayDeclined` when Alipay refused the
        freeze (credit or risk), ``WebhookRejected`` when the text is not Alipay's."""
        self._check_ref(hold_ref)
        try:
            node = self._sdk._verify_and_return_sync_response(result, _FREEZE_RESPONSE)
        except (AliPayValidationError, AliPayException, _Unsigned, ValueError, AttributeError) as e:
            raise WebhookRejected(f"the app result is not a verified Alipay answer: {e!r}") from e
        if node.get("out_order_no") not in (None, "", hold_ref):
            raise WebhookRejected(f"the app result is for order {node.get('out_order_no')}, not {hold_ref}")
        if str(node.get("code")) != "10000":
            sub = str(node.get("sub_code", ""))
            raise AlipayDeclined(
                f"Alipay refused the freeze {hold_ref}: {sub} {node.get('sub_msg', '')}".strip(),
                "insufficient_funds" if sub in _INSUFFICIENT else "card_declined",
                sub,
            )
        d = self._freeze_detail(hold_ref)
        return self._hold_from_detail(hold_ref, d)

    def capture(self, hold_ref: str, amount: int, idempotency_key: str) -> Capture:
        """``alipay.trade.pay`` of ``amount`` against the authorization, the rest unfrozen (COMPLETE)."""
        self._check_ref(hold_ref)
        d = self._operation(hold_ref, _freeze_no(hold_ref), "FREEZE")
        if d is None or d.get("order_status") == "INIT":
            raise InvalidRequest(f"hold {hold_ref} is pending: the renter has not confirmed the freeze")
        frozen = _fen(d.get("total_freeze_amount"))
        if not isinstance(amount, int) or not 0 < amount <= frozen:
            raise InvalidRequest(
                f"capture of {amount!r} must be between 1 and the hold {frozen} ({hold_ref})"
            )
        out_trade_no = _trade_no(hold_ref)
        biz = {
            "out_trade_no": out_trade_no,
            "total_amount": _yuan(amount),
            "subject": self.subject,
            "product_code": PRODUCT_CODE,
            "auth_no": d["auth_no"],
            "auth_confirm_mode": "COMPLETE",
            "buyer_id": d.get("payer_user_id", ""),
            "seller_id": self.payee_user_id,
        }
        try:
            r = self._call("alipay.trade.pay", biz, notify_url=self.notify_url)
        except _Refused as e:
            if e.sub_code == "ACQ.TRADE_HAS_SUCCESS":  # paid before (a retry): the first result
                r = self._sdk_call(
                    "alipay.trade.query", lambda: self._sdk.api_alipay_trade_query(out_trade_no=out_trade_no)
                )
                if _fen(r.get("total_amount")) != amount:
                    raise IdempotencyConflict(
                        f"hold {hold_ref} was captured for {r.get('total_amount')} yuan, not {_yuan(amount)}"
                    ) from e
            elif e.sub_code == "ACQ.CONTEXT_INCONSISTENT":
                raise IdempotencyConflict(f"hold {hold_ref}: a capture with other values exists ({e})") from e
            elif e.sub_code == "ACQ.AUTH_ORDER_HAS_CLOSED":
                raise HoldExpired(
                    f"hold {hold_ref}: the authorization is closed (expired or unfrozen)"
                ) from e
            elif e.sub_code in _INSUFFICIENT:
                raise AlipayDeclined(
                    f"hold {hold_ref}: the renter's balance does not cover {_yuan(amount)} yuan (the credit "
                    "freeze reserved no money); the fee stays due",
                    "insufficient_funds",
                    e.sub_code,
                ) from e
            elif e.sub_code in _REFUSED:
                raise AlipayDeclined(
                    f"hold {hold_ref}: Alipay refused the payment ({e})", "card_declined", e.sub_code
                ) from e
            else:
                raise _as_error(e) from e
        if str(r.get("code")) == "10003" or r.get("trade_status") == "WAIT_BUYER_PAY":
            raise ProviderUnavailable(
                f"hold {hold_ref}: the payment is still in progress; retry with the same key"
            )
        return Capture(hold_ref, str(r["trade_no"]), amount, frozen - amount)

    def void(self, hold_ref: str, idempotency_key: str) -> Void:
        """Unfreeze the whole rest (or cancel a freeze the renter has not confirmed yet)."""
        self._check_ref(hold_ref)
        d = self._operation(hold_ref, _freeze_no(hold_ref), "FREEZE")
        if d is None:
            return Void(hold_ref, 0)  # the renter never opened the order string: nothing reserved
        remark = f"免押解冻 {_digest(idempotency_key, 16)}"  # the key's digest: which void this was
        status = d.get("order_status")
        if status == "INIT":
            r = self._call(
                "alipay.fund.auth.operation.cancel",
                {"out_order_no": hold_ref, "out_request_no": _freeze_no(hold_ref), "remark": remark},
            )
            return Void(hold_ref, _fen(d.get("amount")) if r.get("action") == "unfreeze" else 0)
        if status == "FINISH":
            raise InvalidRequest(f"hold {hold_ref} is captured, cannot void")
        if status == "AUTHORIZED":
            rest = _fen(d.get("rest_amount"))
            try:
                r = self._call(
                    "alipay.fund.auth.order.unfreeze",
                    {
                        "auth_no": d["auth_no"],
                        "out_request_no": _unfreeze_no(hold_ref),
                        "amount": _yuan(rest),
                        "remark": remark,
                    },
                    notify_url=self.notify_url,
                )
                return Void(hold_ref, _fen(r.get("amount")))
            except _Refused as e:
                d = self._freeze_detail(hold_ref)  # closed meanwhile (expiry, another void)?
                if d.get("order_status") != "CLOSED":
                    raise _as_error(e) from e
        mine = self._operation(hold_ref, _unfreeze_no(hold_ref), "UNFREEZE")
        if mine is not None and mine.get("remark") == remark:
            return Void(hold_ref, _fen(mine.get("amount")))  # this void's first result
        return Void(hold_ref, 0)  # expired, or voided under another key: nothing left to release

    def refund(self, hold_ref: str, amount: int, idempotency_key: str) -> Refund:
        """``alipay.trade.refund`` of part of the hold's payment (several partial refunds allowed)."""
        self._check_ref(hold_ref)
        if not isinstance(amount, int) or amount <= 0:
            raise InvalidRequest(f"refund amount must be a positive number of fen, got {amount!r}")
        out_trade_no, request_no = _trade_no(hold_ref), "PBR" + _digest(idempotency_key)
        try:
            r = self._sdk_call(
                "alipay.trade.refund",
                lambda: self._sdk.api_alipay_trade_refund(
                    _yuan(amount), out_trade_no=out_trade_no, out_request_no=request_no
                ),
            )
        except _Refused as e:
            if e.sub_code in (
                "ACQ.TRADE_NOT_EXIST",
                "ACQ.TRADE_STATUS_ERROR",
                "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
            ):
                raise InvalidRequest(f"refund of {_yuan(amount)} yuan on hold {hold_ref} refused: {e}") from e
            raise _as_error(e) from e
        if r.get("fund_change") != "Y":  # no money moved now: this request ran before
            q = self._sdk_call(
                "alipay.trade.fastpay.refund.query",
                lambda: self._sdk.api_alipay_trade_fastpay_refund_query(
                    request_no, out_trade_no=out_trade_no
                ),
            )
            if _fen(q.get("refund_amount")) != amount:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} refunded {q.get('refund_amount') or 'nothing'} yuan "
                    f"on hold {hold_ref}, not {_yuan(amount)}"
                )
        return Refund(hold_ref, request_no, amount, _fen(r.get("refund_fee")))

    # --- RealProvider --------------------------------------------------------------------

    def hold_status(self, hold_ref: str) -> str:
        """pending | held | captured | voided | expired, from Alipay's order and operations."""
        self._check_ref(hold_ref)
        d = self._operation(hold_ref, _freeze_no(hold_ref), "FREEZE")
        if d is None:
            return "pending"  # the order string was not opened yet (it lapses after confirm_timeout_s)
        return _status(d, lambda: self._operation(hold_ref, _unfreeze_no(hold_ref), "UNFREEZE") is not None)

    def notification_ack(self) -> tuple[int, str, str]:
        """What Alipay must read back to stop re-sending a notification: the bare text ``success``."""
        return 200, "success", "text/plain"

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        """Verify an Alipay notification (form POST, RSA2 over the sorted parameters without
        ``sign``/``sign_type``) and map it; answer Alipay ``success`` once it is stored."""
        charset = "utf-8"
        for k, v in headers.items():
            if k.lower() == "content-type" and "charset=" in v.lower():
                charset = v.lower().split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
        try:
            params = dict(parse_qsl(body.decode(charset), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, LookupError, ValueError) as e:
            raise WebhookRejected(f"notification body is not a form: {e}") from e
        sign = params.pop("sign", "")
        if not sign:
            raise WebhookRejected("notification has no sign")
        if params.get("sign_type", "RSA2") != "RSA2":
            raise WebhookRejected(f"notification sign_type {params.get('sign_type')!r} is not RSA2")
        try:
            ok = bool(self._sdk.verify(dict(params), sign))
        except Exception as e:  # the SDK raises on a bad base64 signature or sign type
            raise WebhookRejected(f"notification signature could not be checked: {e}") from e
        if not ok:
            raise WebhookRejected("notification signature does not match (wrong key or altered body)")
        if params.get("app_id") != self.app_id:
            raise WebhookRejected(f"notification is for app {params.get('app_id')!r}, not ours")
        notify_id = params.get("notify_id", "")
        kind_of = params.get("notify_type", "")
        if not notify_id:
            raise WebhookRejected("notification has no notify_id")
        if kind_of in ("fund_auth_freeze", "fund_auth_unfreeze"):
            hold_ref = params.get("out_order_no", "")
            if not _REF.match(hold_ref):
                raise WebhookRejected(f"notification names order {hold_ref!r}, not one of ours")
            data: dict[str, Any] = {
                k: params[k]
                for k in (
                    "auth_no",
                    "operation_id",
                    "out_request_no",
                    "payer_user_id",
                    "pre_auth_type",
                    "gmt_trans",
                )
                if k in params
            }
            data["hold_ref"] = hold_ref
            if kind_of == "fund_auth_freeze":
                if params.get("status") != "SUCCESS":
                    raise WebhookRejected(f"fund_auth_freeze with status {params.get('status')!r}")
                data["expires_at"] = self._auth_expiry(params)
                kind = "hold.confirmed"
            elif _fen(params.get("total_pay_amount")) > 0:  # the rest released after a capture
                kind, data["after_capture"] = "hold.voided", True
            else:  # ours is a void; any other unfreeze is Alipay's own, at the authorization's end
                kind = (
                    "hold.voided"
                    if params.get("out_request_no") == _unfreeze_no(hold_ref)
                    else "hold.expired"
                )
                data["ref"] = hold_ref  # a void is recorded under the hold's ref
            return ProviderEvent(notify_id, kind, hold_ref, _fen(params.get("amount")), "CNY", kind_of, data)
        if kind_of == "trade_status_sync":
            out_trade_no = params.get("out_trade_no", "")
            hold_ref = out_trade_no[:-1]
            if not (out_trade_no.endswith("P") and _REF.match(hold_ref)):
                raise WebhookRejected(f"notification names trade {out_trade_no!r}, not one of ours")
            data = {
                "hold_ref": hold_ref,
                "trade_no": params.get("trade_no", ""),
                "trade_status": params.get("trade_status", ""),
            }
            if params.get("out_biz_no") or params.get("gmt_refund"):
                data.update(ref=params.get("out_biz_no", ""), refunded_total=_fen(params.get("refund_fee")))
                return ProviderEvent(notify_id, "refund.succeeded", hold_ref, None, "CNY", kind_of, data)
            if params.get("trade_status") in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                data["ref"] = params.get("trade_no", "")
                return ProviderEvent(
                    notify_id,
                    "hold.captured",
                    hold_ref,
                    _fen(params.get("total_amount")),
                    "CNY",
                    kind_of,
                    data,
                )
            if params.get("trade_status") == "TRADE_CLOSED":
                data["reason"] = "the payment was closed unpaid"
                return ProviderEvent(
                    notify_id,
                    "payment.failed",
                    hold_ref,
                    _fen(params.get("total_amount")),
                    "CNY",
                    kind_of,
                    data,
                )
        raise WebhookRejected(f"unsupported Alipay notification {kind_of!r} {params.get('trade_status', '')}")

    def statement(self, day: date) -> list[StatementLine]:
        """Lines that happened on ``day`` (UTC), from the bills of the two Beijing dates that
        overlap it: captures, refunds and fees from the trade bill (业务明细), payouts (分账) from
        the account bill (signcustomer, 账务明细). A bill Alipay has not made yet is skipped."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        lines: list[StatementLine] = []
        for bill_day in (day, day + timedelta(days=1)):
            for bill_type, parse in (("trade", parse_trade_bill), ("signcustomer", parse_account_bill)):
                try:
                    r = self._call(
                        "alipay.data.dataservice.bill.downloadurl.query",
                        {"bill_type": bill_type, "bill_date": bill_day.isoformat()},
                    )
                except _Refused as e:
                    if "bill_not_exist" in e.sub_code.lower() or "bill_date" in e.sub_code.lower():
                        continue
                    raise _as_error(e) from e
                lines += parse(self._download(str(r["bill_download_url"])))
        return sorted(
            (ln for ln in lines if start <= ln.at < start + 86400), key=lambda ln: (ln.at, ln.provider_ref)
        )

    def payout(
        self, destination: str, amount: int, currency: str, hold_ref: str | None, idempotency_key: str
    ) -> Payout:
        """``alipay.trade.order.settle`` of ``amount`` from the hold's payment to ``destination``
        (an Alipay user id 2088..., or a login name), then its state from settle.query."""
        _check_cny(currency)
        if hold_ref is None:
            raise InvalidRequest("Alipay settles per payment: payout needs the hold_ref of a captured hold")
        self._check_ref(hold_ref)
        if not isinstance(amount, int) or amount <= 0:
            raise InvalidRequest(f"payout amount must be a positive number of fen, got {amount!r}")
        try:
            trade = self._sdk_call(
                "alipay.trade.query",
                lambda: self._sdk.api_alipay_trade_query(out_trade_no=_trade_no(hold_ref)),
            )
        except _Refused as e:
            if e.sub_code == "ACQ.TRADE_NOT_EXIST":
                raise InvalidRequest(f"hold {hold_ref} has no payment to settle from") from e
            raise _as_error(e) from e
        kind = "userId" if re.fullmatch(r"2088\d{12}", destination) else "loginName"
        request_no = "PBS" + _digest(idempotency_key)
        royalty = [
            {
                "royalty_type": "transfer",
                "trans_in_type": kind,
                "trans_in": destination,
                "amount": _yuan(amount),
                "desc": f"merchant share {hold_ref}",
            }
        ]
        try:
            r = self._sdk_call(
                "alipay.trade.order.settle",
                lambda: self._sdk.api_alipay_trade_order_settle(request_no, str(trade["trade_no"]), royalty),
            )
        except _Refused as e:
            if e.sub_code in (
                "ACQ.ROYALTY_ACCOUNT_NOT_EXIST",
                "ACQ.ALLOC_AMOUNT_VALIDATE_ERROR",
                "ACQ.TRADE_SETTLE_ERROR",
                "ACQ.TRADE_STATUS_ERROR",
            ):
                raise InvalidRequest(f"settle of {_yuan(amount)} yuan to {destination} refused: {e}") from e
            raise _as_error(e) from e
        q = self._call("alipay.trade.order.settle.query", {"settle_no": r["settle_no"]})
        details = q.get("royalty_detail_list") or [{}]
        first = details[0]
        if _fen(first.get("amount")) != amount or first.get("trans_in") != destination:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} settled {first.get('amount')} yuan to "
                f"{first.get('trans_in')}, not {_yuan(amount)} to {destination}"
            )
        state = {"SUCCESS": "paid", "FAIL": "failed"}.get(str(first.get("state")), "pending")
        return Payout(str(r["settle_no"]), destination, amount, "CNY", state)

    # --- internals -----------------------------------------------------------------------

    def _call(self, method: str, biz: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._sdk_call(method, lambda: self._sdk.server_api(method, biz, **kwargs))

    def _sdk_call(self, method: str, run: Callable[[], Any]) -> dict[str, Any]:
        """Run one SDK call: transport failures and unverifiable answers are ProviderUnavailable,
        answers other than 10000 raise _Refused (SYSTEM_ERROR and 20000 are ProviderUnavailable)."""
        try:
            node = run()
        except _Unsigned as e:
            node = e.node
            if not node.get("code"):
                raise ProviderUnavailable(f"{method}: an unsigned answer without a code ({node!r})") from e
        except AliPayValidationError as e:
            raise ProviderUnavailable(
                f"{method}: Alipay's answer failed signature verification; the call may have taken "
                "effect, retry with the same key"
            ) from e
        except (OSError, http.client.HTTPException, ValueError, AliPayException) as e:  # 5xx, timeouts, junk
            raise ProviderUnavailable(
                f"{method}: no usable answer from Alipay ({e!r}); retry with the same key"
            ) from e
        if not isinstance(node, dict):
            raise ProviderUnavailable(f"{method}: unexpected answer {node!r}")
        code, sub = str(node.get("code", "")), str(node.get("sub_code", ""))
        if code in ("10000", "10003"):
            return node
        if code in _UNAVAILABLE_CODES or sub.endswith("SYSTEM_ERROR") or sub == "isp.unknow-error":
            raise ProviderUnavailable(
                f"{method}: Alipay is unavailable ({code} {sub}); retry with the same key"
            )
        raise _Refused(method, node)

    def _freeze_detail(self, hold_ref: str) -> dict[str, Any]:
        d = self._operation(hold_ref, _freeze_no(hold_ref), "FREEZE")
        if d is None:
            raise InvalidRequest(f"no such hold {hold_ref} at Alipay (the renter never opened it)")
        return d

    def _operation(self, hold_ref: str, request_no: str, kind: str) -> dict[str, Any] | None:
        try:
            return self._call(
                "alipay.fund.auth.operation.detail.query",
                {"out_order_no": hold_ref, "out_request_no": request_no, "operation_type": kind},
            )
        except _Refused as e:
            if e.sub_code.endswith(("AUTH_ORDER_NOT_EXIST", "AUTH_OPERATION_NOT_EXIST")):
                return None
            raise _as_error(e) from e

    def _hold_from_detail(self, hold_ref: str, d: Mapping[str, Any]) -> Hold:
        status = _status(d, lambda: False)
        amount = _fen(d.get("total_freeze_amount"))
        if status == "pending":
            return Hold(hold_ref, amount, "CNY", self.clock() + self.hold_ttl_s, "pending")
        if status == "held":
            return Hold(hold_ref, amount, "CNY", self._auth_expiry(d), "held")
        raise HoldExpired(f"hold {hold_ref} is {status}")

    def _auth_expiry(self, d: Mapping[str, Any]) -> float:
        at = _cst_time(d.get("gmt_trans"))
        return (at if at is not None else self.clock()) + self.hold_ttl_s

    def _download(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                return bytes(resp.read())
        except (OSError, http.client.HTTPException) as e:
            raise ProviderUnavailable(f"bill download failed ({e!r}); ask again for a new URL") from e

    @staticmethod
    def _check_ref(hold_ref: str) -> None:
        if not isinstance(hold_ref, str) or not _REF.match(hold_ref):
            raise InvalidRequest(f"{hold_ref!r} is not an Alipay hold of this adapter")


def parse_trade_bill(data: bytes) -> list[StatementLine]:
    """StatementLines from the trade bill zip: the GBK 业务明细 CSV (the 汇总 file is skipped)."""
    out: list[StatementLine] = []
    for cell in _bill_rows(data, "支付宝交易号"):
        out += _bill_lines(cell)
    return out


def parse_account_bill(data: bytes) -> list[StatementLine]:
    """Payout lines from the account bill zip (signcustomer): its 分账 rows, ``provider_ref`` the
    业务流水号 (the settle_no, ``Payout.payout_ref``). Payments, refunds and fees are read from the
    trade bill, not from here."""
    out: list[StatementLine] = []
    for cell in _bill_rows(data, "账务流水号"):
        if "分账" not in cell.get("业务类型", ""):
            continue
        paid = abs(_fen(cell.get("支出金额（-元）"))) - abs(_fen(cell.get("收入金额（+元）")))
        at = _cst_time(cell.get("发生时间"))
        out.append(StatementLine(cell.get("业务流水号", ""), "payout", -paid, "CNY", at or 0.0))
    return out


def _bill_rows(data: bytes, first_column: str) -> list[dict[str, str]]:
    """The rows of the detail CSV in a bill zip (GBK; ``#`` comments; values padded with tabs)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ProviderUnavailable(f"the bill is not a zip file: {e}") from e
    rows: list[dict[str, str]] = []
    for member in archive.namelist():
        lines = archive.read(member).decode("gbk", errors="replace").splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith(first_column)), None)
        if start is None:
            continue  # the summary file, or something else
        header = [h.strip() for h in next(csv.reader([lines[start]]))]
        body = []
        for ln in lines[start + 1 :]:
            if ln.startswith("#"):
                break
            if ln.strip():
                body.append(ln)
        for row in csv.reader(body):
            rows.append({h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)})
    return rows


def _bill_lines(cell: Mapping[str, str]) -> list[StatementLine]:
    trade_no, out_trade_no = cell.get("支付宝交易号", ""), cell.get("商户订单号", "")
    hold_ref = out_trade_no[:-1] if out_trade_no.endswith("P") and _REF.match(out_trade_no[:-1]) else None
    at = _cst_time(cell.get("完成时间") or cell.get("创建时间"))
    received = _fen(cell.get("商家实收（元）") or cell.get("订单金额（元）"))
    fee = abs(_fen(cell.get("服务费（元）")))
    kind = cell.get("业务类型", "")
    when = at if at is not None else 0.0
    if kind == "交易":
        lines = [StatementLine(trade_no, "capture", abs(received), "CNY", when, hold_ref)]
        if fee:
            lines.append(StatementLine(f"{trade_no}:fee", "fee", -fee, "CNY", when, hold_ref))
        return lines
    if kind == "退款":
        ref = cell.get("退款批次号/请求号") or f"{trade_no}:refund"
        lines = [StatementLine(ref, "refund", -abs(received), "CNY", when, hold_ref)]
        if fee:
            lines.append(StatementLine(f"{ref}:fee", "fee", fee, "CNY", when, hold_ref))  # fee given back
        return lines
    return []


def _status(d: Mapping[str, Any], voided_by_us: Callable[[], bool]) -> str:
    order, op = d.get("order_status"), d.get("status")
    if order == "INIT":
        return "pending"
    if order == "AUTHORIZED":
        return "held"
    if order == "FINISH" or _fen(d.get("total_pay_amount")) > 0:
        return "captured"
    if op != "SUCCESS":  # closed without a freeze: lapsed, refused, or cancelled before confirming
        return "expired"
    return "voided" if voided_by_us() else "expired"


def _secret(what: str, path: str | None, env_name: str | None, env: Mapping[str, str]) -> str:
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"alipay provider: cannot read the {what} file {path}: {e}") from e
        if not text.strip():
            raise ConfigError(f"alipay provider: the {what} file {path} is empty")
        return text
    if env_name:
        value = env.get(env_name, "")
        if not value.strip():
            raise ConfigError(f"alipay provider: environment variable {env_name} (the {what}) is not set")
        return value
    raise ConfigError(
        f"alipay provider: the {what} is not configured (give its file or environment variable name)"
    )


def _pem(text: str, kind: str) -> str:
    """A key as PEM; Alipay's console hands out bare base64 (one line), which PEM wraps."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text
    body = "".join(text.split())
    return (
        f"-----BEGIN {kind}-----\n"
        + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        + f"\n-----END {kind}-----"
    )


def _check_cny(currency: str) -> None:
    if currency != "CNY":
        raise InvalidRequest(f"Alipay fund authorization is in CNY only, not {currency!r}")


def _digest(key: str, n: int = 29) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:n]


def _freeze_no(hold_ref: str) -> str:
    return "PBF" + hold_ref[3:]


def _trade_no(hold_ref: str) -> str:
    return hold_ref + "P"


def _unfreeze_no(hold_ref: str) -> str:
    return hold_ref + "U"


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _fen(text: Any) -> int:
    """Fen of an Alipay amount in yuan ("12.30", 12.3); 0 when absent."""
    if text in (None, ""):
        return 0
    try:
        return int((Decimal(str(text)) * 100).to_integral_exact())
    except (InvalidOperation, ArithmeticError) as e:
        raise ProviderUnavailable(
            f"Alipay sent an amount that is not yuan with two decimals: {text!r}"
        ) from e


def _cst_time(text: Any) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp()
    except ValueError:
        return None


def _as_error(e: _Refused) -> PaymentError:
    """The cloud's error for a refusal no caller mapped."""
    if e.code == "40002" or e.sub_code.startswith("isv.invalid-signature"):
        return PaymentError(
            f"Alipay refused the request ({e}): check app_id and the app key pair", "alipay_rejected"
        )
    if e.code == "20001":
        return PaymentError(f"Alipay: insufficient permissions ({e})", "alipay_rejected")
    return InvalidRequest(f"Alipay refused: {e}")
