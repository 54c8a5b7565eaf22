"""The demo's payment providers: the built-in sandbox, or a real provider's SDK against its local fake.

``scripts/demo.py --provider sandbox|stripe-fake|wechat-fake|alipay-fake`` picks one :class:`Rail`.
A fake (the one of the tests, ``tests/fakes/``) runs inside the demo process; the cloud process
speaks to it through the provider's real SDK, and the fake posts its signed notifications to the
cloud's ``POST /api/payments/{provider}/notify``. Every key is generated when the demo starts and
reaches the cloud process through its environment: none is written to a file, none is in the
repository.

WeChat Pay Score and Alipay need the renter's confirmation in their apps before anything is
ejected (``POST /api/rentals`` answers 202 ``awaiting_confirmation`` with a ``client_action``).
Nobody holds a phone in the demo, so :meth:`Rail.confirm` plays the renter with what the phone
would have (the ``client_action``), through the fake, as the tests do, and says so.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sync.amounts import format_money

ROOT = Path(__file__).resolve().parent.parent
CHOICES = ("sandbox", "stripe-fake", "wechat-fake", "alipay-fake")

EUR = {"currency": "EUR", "timezone": "Europe/Berlin"}
EUR_TARIFF = {"currency": "EUR", "price_per_period": 200, "period_minutes": 60, "free_minutes": 5,
              "daily_cap": 1000, "total_cap": 3500, "timezone": "Europe/Berlin"}  # fmt: skip
#: WeChat Pay Score and Alipay take CNY only. No free minutes, so the demo's short rental costs one
#: period (2.00 CNY) and the provider really collects it; the hold (risk fund, freeze) is the cap.
CNY = {"currency": "CNY", "timezone": "Asia/Shanghai"}
CNY_TARIFF = {"currency": "CNY", "price_per_period": 200, "period_minutes": 30, "free_minutes": 0,
              "daily_cap": 2000, "total_cap": 9900, "timezone": "Asia/Shanghai"}  # fmt: skip


class Refused(RuntimeError):
    """The provider (or the renter's app, played by its fake) refused, or never notified the cloud."""


def _fakes() -> None:
    """Make ``tests.fakes`` importable (the demo runs from scripts/)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


class Rail:
    """The built-in sandbox: a sandbox card, holds and captures answered by the cloud itself."""

    choice = "sandbox"
    provider = "sandbox"  # the cloud's name of it
    app = "the sandbox"  # the provider's app on the renter's phone
    title = "a sandbox card"
    merchant = EUR
    tariff = EUR_TARIFF
    needs_confirmation = False

    def __init__(self) -> None:
        self.env: dict[str, str] = {}  # the cloud process's environment (its keys)
        self.urls: list[tuple[str, str]] = []

    def start(self, cloud_port: int) -> str:
        """Start the fake; returns the cloud config lines (``provider`` and its settings table)."""
        return ""

    def stop(self) -> None:
        pass

    def renter_method(self, session: dict[str, Any]) -> tuple[str, str] | None:
        """The renter's saved payment method (token, label); None: the sandbox card instead."""
        return None

    def payout_account(self) -> str | None:
        return None

    def confirm(self, answer: dict[str, Any], session: dict[str, Any]) -> str:
        """Play the renter's confirmation of a 202 ``awaiting_confirmation`` answer; what to print."""
        raise Refused(f"{self.choice} asks for no confirmation")

    def paid(self, rental: dict[str, Any], timeout: float = 30.0) -> str | None:
        """Wait until the provider's notification of the collected fee has reached the cloud;
        a line saying so, or None when the provider sends none."""
        return None


class StripeRail(Rail):
    """Stripe's SDK against tests/fakes/stripe_fake.py; the renter's test card is saved with a
    SetupIntent, the fake's signed webhooks go to the cloud."""

    choice, provider, title = "stripe-fake", "stripe", "a Stripe test card"

    def start(self, cloud_port: int) -> str:
        _fakes()
        from tests.fakes.stripe_fake import StripeFake

        fake = StripeFake().start()
        fake.auto_deliver = True  # webhooks go out by themselves, signed, to the cloud
        fake.webhook_url = f"http://127.0.0.1:{cloud_port}/api/payments/stripe/notify"
        self.fake = fake
        self.env = {"STRIPE_SECRET_KEY": fake.api_key, "STRIPE_WEBHOOK_SECRET": fake.webhook_secret}
        self.urls.append(("Stripe (local fake of the tests, real SDK)", fake.url))
        # keys: the environment of the cloud process, never the file
        return f'provider = "stripe"\n[cloud.provider_settings.stripe]\nstripe_api_base = "{fake.url}"\n'

    def stop(self) -> None:
        self.fake.stop()

    def renter_method(self, session: dict[str, Any]) -> tuple[str, str]:
        """What the renter's phone does with Stripe.js: a SetupIntent confirmed with a test card
        (the fake's helper stands for the phone); the saved card's ``cus_..:pm_..``."""
        from cloud.payments.stripe_provider import StripeProvider

        stripe = StripeProvider.from_config({"stripe_api_base": self.fake.url}, environ=self.env)
        setup = stripe.save_card(None, f"demo:renter:setup:{secrets.token_hex(4)}")
        self.fake.confirm_setup(setup["setup_intent"], "4242424242424242")
        return stripe.confirmed_card_token(setup["setup_intent"]), "Visa 4242 (Stripe fake)"

    def payout_account(self) -> str:
        return str(self.fake.add_account())


class WeChatRail(Rail):
    """WeChat Pay Score (微信支付分) through the ``wechatpayv3`` SDK against
    tests/fakes/wechat_fake.py: a service order per rental, confirmed by the renter in the Pay
    Score mini program, completed with the fee at the return and collected by WeChat."""

    choice, provider, title, app = "wechat-fake", "wechat", "a WeChat Pay Score account", "WeChat"
    merchant, tariff, needs_confirmation = CNY, CNY_TARIFF, True
    # public identifiers of a demo merchant (not secrets; the fake checks them)
    MCHID, APPID, SERVICE_ID = "1900000109", "wxd678efh567hg6787", "2002000000000558128851361561536"

    def start(self, cloud_port: int) -> str:
        _fakes()
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from tests.fakes.wechat_fake import WeChatPayFake

        merchant, platform = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)
        )
        apiv3 = secrets.token_hex(16)  # 32 characters, as WeChat's APIv3 key
        serial = secrets.token_hex(20).upper()  # the merchant certificate's serial number
        key_id = f"PUB_KEY_ID_01{self.MCHID}{time.strftime('%Y%m%d')}{secrets.randbelow(10**8):08d}"
        self.fake = WeChatPayFake(mchid=self.MCHID, appid=self.APPID, service_id=self.SERVICE_ID,
                                  merchant_serial_no=serial, merchant_public_key=merchant.public_key(),
                                  platform_private_key=platform, apiv3_key=apiv3,
                                  platform_public_key_id=key_id).start()  # fmt: skip
        # WeChat repeats an unanswered notification (15 s, 15 s, 30 s, 3 min, ...): the same, quicker
        self.fake.retry_schedule_s = [1.0, 2.0, 5.0, 15.0, 30.0, 60.0]
        self.env = {
            "WECHAT_MERCHANT_KEY": merchant.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "WECHAT_APIV3_KEY": apiv3,
            "WECHAT_PAY_PUBLIC_KEY": platform.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode(),
        }
        self.urls.append(("WeChat Pay (local fake of the tests, real SDK)", self.fake.base_url))
        return (
            'provider = "wechat"\n[cloud.provider_settings.wechat]\n'
            f'mchid = "{self.MCHID}"\nappid = "{self.APPID}"\nservice_id = "{self.SERVICE_ID}"\n'
            f'merchant_serial_no = "{serial}"\n'
            f'notify_url = "http://127.0.0.1:{cloud_port}/api/payments/wechat/notify"\n'
            'private_key_env = "WECHAT_MERCHANT_KEY"\napiv3_key_env = "WECHAT_APIV3_KEY"\n'
            f'platform_public_key_id = "{key_id}"\nplatform_public_key_env = "WECHAT_PAY_PUBLIC_KEY"\n'
            f'gateway = "{self.fake.base_url}"\n'
        )  # keys: the environment of the cloud process, never the file

    def stop(self) -> None:
        self.fake.stop()

    def renter_method(self, session: dict[str, Any]) -> tuple[str, str]:
        """The renter's openid (what WeChat login gives the merchant's mini program)."""
        openid = session.setdefault("wechat_openid", "o" + secrets.token_urlsafe(21)[:27])
        return openid, "WeChat Pay Score (fake)"

    def confirm(self, answer: dict[str, Any], session: dict[str, Any]) -> str:
        action = answer["client_action"]
        try:
            ok = self.fake.user_opens_business_view(
                action["businessType"], dict(action["extraData"]), session["wechat_openid"]
            )
        except ValueError as e:  # the mini program refuses what the phone was given
            raise Refused(str(e)) from None
        if not ok:
            raise Refused("WeChat refused the renter's confirmation of the Pay Score order")
        return "renter: confirmed the Pay Score order in WeChat (played by the fake)"

    def paid(self, rental: dict[str, Any], timeout: float = 30.0) -> str | None:
        if not rental.get("captured"):
            return None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = [d.status for d in self.fake.deliveries if d.event_type == "PAYSCORE.USER_PAID"]
            if 200 in got or 204 in got:
                return (
                    f"WeChat: collected {format_money(rental['captured'], rental['currency'])} from the renter; "
                    "its PAYSCORE.USER_PAID notification reached the cloud"
                )
            time.sleep(0.2)
        raise Refused("WeChat's PAYSCORE.USER_PAID notification did not reach the cloud")


class AlipayRail(Rail):
    """Alipay fund authorization (资金预授权, credit 免押) through ``python-alipay-sdk`` against
    tests/fakes/alipay_fake.py: a credit freeze per rental, confirmed by the renter in the Alipay
    app, the fee paid against it at the return (alipay.trade.pay), the rest unfrozen."""

    choice, provider, title, app = "alipay-fake", "alipay", "an Alipay account", "the Alipay app"
    merchant, tariff, needs_confirmation = CNY, CNY_TARIFF, True
    APP_ID, SELLER = "2021004100000001", "2088000000000001"
    SERVICE_ID, CATEGORY = "2020042800000000000001450466", "RENT_POWERBANK"

    def start(self, cloud_port: int) -> str:
        _fakes()
        from tests.fakes.alipay_fake import AlipayFake, generate_rsa_keypair

        app_private, app_public = generate_rsa_keypair()
        alipay_private, alipay_public = generate_rsa_keypair()
        self.fake = AlipayFake(app_id=self.APP_ID, app_public_key=app_public, alipay_private_key=alipay_private,
                               seller_id=self.SELLER).start()  # fmt: skip
        self.env = {"ALIPAY_APP_KEY": app_private, "ALIPAY_PUBLIC_KEY": alipay_public}
        # Alipay posts a notification again until it reads "success" (4 min, 10 min, ...): quicker here
        self._stopping = threading.Event()
        self._redeliver = threading.Thread(target=self._redeliver_loop, name="alipay-redeliver", daemon=True)
        self._redeliver.start()
        self.urls.append(("Alipay (local fake of the tests, real SDK)", self.fake.gateway_url))
        return (
            'provider = "alipay"\n[cloud.provider_settings.alipay]\n'
            f'app_id = "{self.APP_ID}"\npayee_user_id = "{self.SELLER}"\n'
            f'notify_url = "http://127.0.0.1:{cloud_port}/api/payments/alipay/notify"\n'
            f'service_id = "{self.SERVICE_ID}"\ncategory = "{self.CATEGORY}"\n'
            'app_private_key_env = "ALIPAY_APP_KEY"\nalipay_public_key_env = "ALIPAY_PUBLIC_KEY"\n'
            f'gateway = "{self.fake.gateway_url}"\n'
        )  # keys: the environment of the cloud process, never the file

    def _redeliver_loop(self) -> None:
        while not self._stopping.wait(2.0):
            if self.fake.queued:
                self.fake.deliver()

    def stop(self) -> None:
        self._stopping.set()
        self._redeliver.join(timeout=10)
        self.fake.stop()

    def renter_method(self, session: dict[str, Any]) -> tuple[str, str]:
        """The renter's Alipay user id (2088..., what Alipay login gives the merchant's app)."""
        buyer = session.setdefault("alipay_user_id", f"2088{secrets.randbelow(10**12):012d}")
        return buyer, "Alipay (fake)"

    def confirm(self, answer: dict[str, Any], session: dict[str, Any]) -> str:
        result = self.fake.renter_submits(answer["client_action"]["order_str"], session["alipay_user_id"])
        if result.get("resultCode") != "9000":
            raise Refused(f"the renter's Alipay app refused the credit freeze: {result}")
        return "renter: confirmed the credit freeze (免押) in the Alipay app (played by the fake)"

    def paid(self, rental: dict[str, Any], timeout: float = 30.0) -> str | None:
        if not rental.get("captured"):
            return None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(
                n.params.get("notify_type") == "trade_status_sync" and (200, "success") in n.deliveries
                for n in list(self.fake.sent)
            ):
                return (
                    f"Alipay: paid {format_money(rental['captured'], rental['currency'])} against the freeze; "
                    "its trade_status_sync notification reached the cloud"
                )
            time.sleep(0.2)
        raise Refused("Alipay's trade_status_sync notification did not reach the cloud")


def rail(choice: str) -> Rail:
    """The rail of a ``--provider`` choice."""
    rails: dict[str, type[Rail]] = {
        "sandbox": Rail,
        "stripe-fake": StripeRail,
        "wechat-fake": WeChatRail,
        "alipay-fake": AlipayRail,
    }
    return rails[choice]()
