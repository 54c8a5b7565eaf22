"""payment rails: providers per merchant and per rental, payment methods, debts, chargebacks, payouts

- ``merchants.providers``: the providers a merchant accepts, comma-separated, in order of
  preference (NULL: the cloud's default provider).
- ``payment_methods``: a renter's saved methods, one provider each (a Stripe customer and
  payment method, a WeChat openid, an Alipay user id); ``users.card_token`` stays the default
  provider's method (the sandbox card).
- ``rentals.provider``: the provider the rental's hold was placed with (NULL: the default, for
  rentals from before); every later call for the rental goes there. ``hold_status`` may now be
  ``pending`` (the renter has to confirm in the provider's app).
- ``rentals.debt_attempts`` / ``debt_retry_at``: a fee that could not be collected is retried with
  backoff; ``rentals.flag``: a provider dispute (chargeback) on the rental;
  ``rentals.eject_requested_at``: when the eject was asked (a hold the renter confirms later asks
  for it at the confirmation; NULL: at ``created_at``).
- ``merchant_payouts``: money really paid out to a merchant, once per idempotency key.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("merchants") as b:
        b.add_column(sa.Column("providers", sa.Text(), nullable=True))
        b.add_column(sa.Column("payout_account", sa.Text(), nullable=True))
    with op.batch_alter_table("rentals") as b:
        b.add_column(sa.Column("provider", sa.String(length=32), nullable=True))
        b.add_column(sa.Column("debt_attempts", sa.Integer(), server_default="0", nullable=False))
        b.add_column(sa.Column("debt_retry_at", sa.Float(), nullable=True))
        b.add_column(sa.Column("flag", sa.String(length=32), nullable=True))
        b.add_column(sa.Column("eject_requested_at", sa.Float(), nullable=True))
    with op.batch_alter_table("pass_holds") as b:
        b.add_column(sa.Column("provider", sa.String(length=32), nullable=True))
    op.create_table(
        "payment_methods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_payment_methods_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_methods")),
    )
    op.create_index(op.f("ix_payment_methods_user_id"), "payment_methods", ["user_id"], unique=False)
    op.create_table(
        "merchant_payouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("payout_ref", sa.String(length=128), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("paid_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_merchant_payouts_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_payouts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_merchant_payouts_idempotency_key")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_merchant_payouts_amount")),
    )
    op.create_index(
        op.f("ix_merchant_payouts_merchant_id"), "merchant_payouts", ["merchant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_merchant_payouts_merchant_id"), table_name="merchant_payouts")
    op.drop_table("merchant_payouts")
    op.drop_index(op.f("ix_payment_methods_user_id"), table_name="payment_methods")
    op.drop_table("payment_methods")
    with op.batch_alter_table("pass_holds") as b:
        b.drop_column("provider")
    with op.batch_alter_table("rentals") as b:
        b.drop_column("eject_requested_at")
        b.drop_column("flag")
        b.drop_column("debt_retry_at")
        b.drop_column("debt_attempts")
        b.drop_column("provider")
    with op.batch_alter_table("merchants") as b:
        b.drop_column("payout_account")
        b.drop_column("providers")
