"""Cloud storage: SQLAlchemy Core tables, engine set-up and Alembic migrations.

Times are unix seconds (float), money is integer minor units (BigInteger), ids of things
that cabinets also name (cabinets, rentals, events, commands) are text.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    text,
)

from cloud.config import database_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", Text),
    Column("password_hash", Text),
    Column("role", String(16), nullable=False, server_default="renter"),
    Column("card_token", Text),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
    Column("phone", String(16)),  # E.164, verified by a one-time code (cloud/phone_auth.py)
    CheckConstraint("role in ('renter', 'operator')", name="role"),
    Index("ix_users_phone", "phone", unique=True),  # one account per phone (NULLs do not collide)
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(400), nullable=False, index=True),
    Column("at", Float, nullable=False),
)

# one counter per throttled key (account:<email>, ip:<address>, signup:<address>), bumped atomically
auth_throttle = Table(
    "auth_throttle",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("window_start", Float, nullable=False),
    Column("count", Integer, nullable=False),
)

# one pending sign-in code per phone (cloud/phone_auth.py): only its salted hash is kept
sms_codes = Table(
    "sms_codes",
    metadata,
    Column("phone", String(16), primary_key=True),
    Column("salt", String(32), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
)

merchants = Table(
    "merchants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("revenue_share_bp", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("default_tariff_id", Integer),
    Column("created_at", Float, nullable=False),
    Column("providers", Text),  # accepted providers, comma-separated, preferred first; NULL: the default
    Column("payout_account", Text),  # where payouts go at the provider (sub-merchant id, acct_..., user id)
    CheckConstraint("revenue_share_bp between 0 and 10000", name="share_bp"),
)

tariffs = Table(
    "tariffs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("merchant_id", Integer, ForeignKey("merchants.id")),
    Column("name", Text, nullable=False),
    Column("body", Text, nullable=False),  # the Tariff as JSON (cloud.pricing.Tariff.to_json)
    Column("created_at", Float, nullable=False),
)

venues = Table(
    "venues",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("merchant_id", Integer, ForeignKey("merchants.id"), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("address", Text),
    Column("created_at", Float, nullable=False),
    # where the renter finds it (WGS 84 degrees; both or neither) and when it is open (OSM opening_hours)
    Column("lat", Float),
    Column("lon", Float),
    Column("opening_hours", Text),
    Index("ix_venues_lat_lon", "lat", "lon"),  # the nearby query's bounding box (cloud/places.py)
)

cabinets = Table(
    "cabinets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("venue_id", Integer, ForeignKey("venues.id"), index=True),
    Column("tariff_id", Integer, ForeignKey("tariffs.id")),
    Column("name", Text),
    Column("cmd_counter", BigInteger, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
)

batteries = Table(
    "batteries",
    metadata,
    Column("sn", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # in_fleet | rented | written_off
    Column("cabinet_id", String(64)),
    Column("updated_at", Float, nullable=False),
)

passes = Table(
    "passes",
    metadata,
    Column("pass_id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("max_rentals", Integer, nullable=False),
    Column("revoked_at", Float),
    # issue 11.1: the pass is paid for before use (NULL on passes issued before migration 0005)
    Column("currency", String(3)),
    Column("hold_each", BigInteger),  # each of the max_rentals holds: the fleet's highest rental cap
    Column("hold_status", String(16)),  # placing | held | declined | released
    Column("revoke_reason", Text),
)

pass_holds = Table(  # one provider hold per rental a pass allows, placed when the pass is issued
    "pass_holds",
    metadata,
    Column("pass_id", String(64), ForeignKey("passes.pass_id"), primary_key=True),
    Column("k", Integer, primary_key=True),  # 0 .. max_rentals - 1
    Column("user_id", Integer, nullable=False),
    Column("status", String(16), nullable=False, index=True),  # placing held assigned released declined
    Column("hold_ref", String(64)),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("expires_at", Float),  # the provider's expiry of the hold
    Column("provider", String(32)),  # NULL: the default provider
    Column("rental_id", String(64), unique=True),  # the pass rental that drew on it
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
    CheckConstraint("status in ('placing', 'held', 'assigned', 'released', 'declined')", name="status"),
)

rentals = Table(
    "rentals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("source", String(8), nullable=False),  # app | pass
    Column("pass_id", String(64)),
    Column("status", String(16), nullable=False),  # pending active closed purchased aborted
    Column("cabinet_id", String(64), ForeignKey("cabinets.id"), nullable=False, index=True),
    Column("merchant_id", Integer, ForeignKey("merchants.id")),
    Column("share_bp", Integer, nullable=False, server_default="0"),  # merchant's share at rent time
    Column("slot", Integer),
    Column("battery_sn", String(64), index=True),
    Column("cmd_id", String(64)),
    Column("tariff", Text, nullable=False),  # snapshot of the Tariff JSON at rent time
    Column("currency", String(3), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("start_event_id", String(64)),
    Column("start_wall", Float),
    Column("start_mono", Float),
    Column("start_boot_id", String(64)),
    Column("end_cabinet_id", String(64)),
    Column("end_event_id", String(64)),
    Column("end_wall", Float),
    Column("end_mono", Float),
    Column("end_boot_id", String(64)),
    Column("ended_at", Float),  # cloud time the rental was closed
    Column("duration_s", Float),
    Column("duration_method", String(16)),
    Column("fee", BigInteger),
    Column("hold_amount", BigInteger, nullable=False, server_default="0"),
    Column("hold_ref", String(64)),
    Column("hold_status", String(16)),  # held | captured | voided | expired | declined | none
    Column("hold_expires_at", Float),
    Column("captured", BigInteger, nullable=False, server_default="0"),
    Column("refunded", BigInteger, nullable=False, server_default="0"),
    Column("payment_status", String(16), nullable=False, server_default="none"),  # none|paid|due|failed
    Column("abort_reason", Text),
    Column("provider", String(32)),  # where the hold was placed (NULL: the default provider)
    Column("debt_attempts", Integer, nullable=False, server_default="0"),  # retries of a due fee
    Column("debt_retry_at", Float),  # next retry of a due fee
    Column("flag", String(32)),  # chargeback_open | chargeback_won | chargeback_lost
    Column("eject_requested_at", Float),  # when the eject was asked (NULL: created_at)
    CheckConstraint("source in ('app', 'pass')", name="source"),
    CheckConstraint("status in ('pending', 'active', 'closed', 'purchased', 'aborted')", name="status"),
    CheckConstraint("captured >= 0 and refunded >= 0 and refunded <= captured", name="money"),
    Index(
        "uq_rentals_one_open_app_rental",
        "user_id",
        unique=True,
        sqlite_where=text("status in ('pending', 'active') and source = 'app'"),
        postgresql_where=text("status in ('pending', 'active') and source = 'app'"),
    ),
)

payment_methods = Table(  # a renter's saved methods; users.card_token is the default provider's
    "payment_methods",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("provider", String(32), nullable=False),
    Column("token", Text, nullable=False),  # the provider's reference (cus_..:pm_.., openid, user id)
    Column("label", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
)

merchant_payouts = Table(  # money really paid out to a merchant's account, once per key
    "merchant_payouts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("merchant_id", Integer, ForeignKey("merchants.id"), nullable=False, index=True),
    Column("provider", String(32), nullable=False),
    Column("destination", Text, nullable=False),
    Column("payout_ref", String(128)),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # pending | paid | failed
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("detail", Text),
    Column("created_at", Float, nullable=False),
    Column("paid_at", Float),
    CheckConstraint("amount > 0", name="amount"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rental_id", String(64), ForeignKey("rentals.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # hold capture void refund refund_excess
    Column("provider", String(32), nullable=False),
    Column("provider_ref", String(64)),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # succeeded | failed | confirmed
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("detail", Text),
    Column("created_at", Float, nullable=False),
)

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("rental_id", String(64), index=True),
    Column("merchant_id", Integer, index=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("corrects_entry_id", Integer, ForeignKey("journal_entries.id")),
    Column("memo", Text),
    Column("created_at", Float, nullable=False),
)

journal_postings = Table(
    "journal_postings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("journal_entries.id"), nullable=False, index=True),
    Column("account", String(120), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),  # debit > 0, credit < 0
    Column("currency", String(3), nullable=False),
)

webhooks_received = Table(
    "webhooks_received",
    metadata,
    Column("event_id", String(100), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("received_at", Float, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor_user_id", Integer),
    Column("action", String(64), nullable=False),
    Column("target", Text),
    Column("detail", Text),
)

disputes = Table(
    "disputes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rental_id", String(64), ForeignKey("rentals.id"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),  # open | resolving | refunded | rejected
    Column("reason", Text, nullable=False),
    Column("amount_claimed", BigInteger),  # minor units, in the rental's currency
    Column("currency", String(3), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("resolved_by", Integer),  # the operator's user id
    Column("resolved_at", Float),
    Column("refund_amount", BigInteger),
    Column("note", Text),
    CheckConstraint("status in ('open', 'resolving', 'refunded', 'rejected')", name="status"),
    CheckConstraint(
        "(amount_claimed is null or amount_claimed > 0) and (refund_amount is null or refund_amount > 0)",
        name="amounts",
    ),
    Index(  # at most one unresolved dispute per rental, even with two requests at once
        "uq_disputes_one_open_per_rental",
        "rental_id",
        unique=True,
        sqlite_where=text("status in ('open', 'resolving')"),
        postgresql_where=text("status in ('open', 'resolving')"),
    ),
)

commands = Table(
    "commands",
    metadata,
    Column("cmd_id", String(64), primary_key=True),
    Column("cabinet_id", String(64), ForeignKey("cabinets.id"), nullable=False, index=True),
    Column("counter", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("args", Text, nullable=False),  # JSON
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # queued sent received ok failed expired
    Column("result", Text),
    Column("payload", LargeBinary),  # the signed envelope, so a resend is byte-identical
    Column("sent_at", Float),
    Column("finished_at", Float),
    UniqueConstraint("cabinet_id", "counter"),
)

cabinet_events = Table(
    "cabinet_events",
    metadata,
    Column("cabinet_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("type", String(48), nullable=False),
    Column("at_wall", Float, nullable=False),
    Column("at_mono", Float, nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("body", Text, nullable=False),  # JSON
    Column("received_at", Float, nullable=False),
)

clock_anchors = Table(
    "clock_anchors",
    metadata,
    Column("cabinet_id", String(64), primary_key=True),
    Column("boot_id", String(64), primary_key=True),
    Column("at_mono", Float, nullable=False),
    Column("true_wall", Float, nullable=False),
)

orphan_returns = Table(
    "orphan_returns",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("cabinet_id", String(64), nullable=False),
    Column("battery_sn", String(64), nullable=False, index=True),
    Column("at_wall", Float, nullable=False),
    Column("at_mono", Float, nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("matched_rental_id", String(64)),
)

# --- the fleet side: ingest progress, the fleet view, alerts, signed config ---------------------

fleet_cabinets = Table(
    "fleet_cabinets",
    metadata,
    Column("cabinet_id", String(64), primary_key=True),
    Column("applied_seq", BigInteger, nullable=False, server_default="0"),  # highest contiguous applied
    Column("online", Boolean),
    Column("state_at", Float),  # the cabinet's time of its last State message
    Column("last_seen", Float),  # cloud time of the last message of any kind
    Column("backlog", BigInteger),  # unacked events the cabinet last reported
    Column("versions", Text),  # JSON
    Column("counts", Text),  # JSON
    Column("telemetry_at", Float),
)

fleet_slots = Table(
    "fleet_slots",
    metadata,
    Column("cabinet_id", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("battery_sn", String(64)),
    Column("soc", Integer),
    Column("temp_dc", Integer),
    Column("voltage_mv", Integer),
    Column("current_ma", Integer),
    Column("faults", BigInteger),
    Column("quarantined", Boolean, nullable=False, server_default=false()),
    Column("fault_kind", String(64)),
    Column("updated_at", Float, nullable=False),
)

fleet_alerts = Table(
    "fleet_alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cabinet_id", String(64), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),  # info warning critical
    Column("detail", Text),
    Column("seq", BigInteger),
    Column("event_id", String(64)),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("at", Float, nullable=False),
    Column("acknowledged_at", Float),
    # a condition alert (board down, cabinet offline, empty, full, certificate expiring) has a
    # key "cabinet:kind:subject": raised once, later raises only move last_seen, cleared when it ends
    Column("alert_key", String(200)),
    Column("subject", String(64)),
    Column("last_seen", Float),
    Column("cleared_at", Float),
    Index(  # at most one open alert per key, even with two workers raising it at once
        "uq_fleet_alerts_one_open_per_key",
        "alert_key",
        unique=True,
        sqlite_where=text("cleared_at is null"),
        postgresql_where=text("cleared_at is null"),
    ),
)

cabinet_event_conflicts = Table(
    "cabinet_event_conflicts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cabinet_id", String(64), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("stored_event_id", String(64)),  # what the cloud already holds at (cabinet, seq)
    Column("type", String(48), nullable=False),
    Column("at_wall", Float, nullable=False),
    Column("at_mono", Float, nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("cabinet_id", "event_id"),
)

cabinet_claims = Table(  # a cabinet's claim the cloud did not simply believe (cloud/fleet/claims.py)
    "cabinet_claims",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cabinet_id", String(64), nullable=False),  # who claimed it
    Column("seq", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("type", String(48), nullable=False),
    Column("at_wall", Float, nullable=False),
    Column("at_mono", Float, nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("body", Text, nullable=False),  # JSON, as the cabinet sent it
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending open resolving accepted rejected
    Column("applied", Boolean, nullable=False, server_default=false()),  # its effect is in place
    Column("rental_id", String(64)),
    Column("battery_sn", String(64), index=True),
    Column("created_at", Float, nullable=False),
    Column("deadline", Float),  # pending: open for a human if not verified by then
    Column("resolved_by", Integer),  # the operator's user id (NULL: verified automatically)
    Column("resolved_at", Float),
    Column("resolution", Text),
    CheckConstraint("status in ('pending', 'open', 'resolving', 'accepted', 'rejected')", name="status"),
    UniqueConstraint("cabinet_id", "event_id"),
    Index("ix_cabinet_claims_status", "status"),
)

config_versions = Table(
    "config_versions",
    metadata,
    Column("counter", Integer, primary_key=True),  # one increasing sequence for the whole fleet
    Column("cabinet_id", String(64), nullable=False, index=True),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),  # the signed envelope, published retained
    Column("published_at", Float),
)

cabinet_settings = Table(
    "cabinet_settings",
    metadata,
    Column("cabinet_id", String(64), primary_key=True),  # or "*" for the fleet's defaults
    Column("rentable_min_soc", Integer),
    Column("power_budget_w", Integer),
    Column("battery_deny_list", Text),  # JSON array of SNs
    Column("updated_at", Float, nullable=False),
)

sandbox_holds = Table(
    "sandbox_holds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("card_token", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("captured", BigInteger, nullable=False, server_default="0"),
    Column("refunded", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),  # held captured voided expired
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

sandbox_requests = Table(
    "sandbox_requests",
    metadata,
    Column("idempotency_key", String(200), primary_key=True),
    Column("operation", String(16), nullable=False),
    Column("request", Text, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

sandbox_webhooks = Table(
    "sandbox_webhooks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", String(100), nullable=False),
    Column("payload", Text, nullable=False),
    Column("deliver_at", Float, nullable=False, index=True),
    Column("delivered_at", Float),
)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An Engine for a SQLAlchemy URL or a SQLite path, with safe per-connection settings.

    SQLite gets foreign keys, WAL, synchronous=FULL, a busy timeout and ``BEGIN IMMEDIATE``
    transactions, so two writers wait for each other instead of failing mid-transaction.
    """
    url = database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` with the packaged Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
