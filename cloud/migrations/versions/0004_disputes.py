"""disputes: a renter's complaint about one rental, resolved by an operator (refund or reject)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNRESOLVED = "status in ('open', 'resolving')"


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rental_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("amount_claimed", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("resolved_at", sa.Float(), nullable=True),
        sa.Column("refund_amount", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status in ('open', 'resolving', 'refunded', 'rejected')", name=op.f("ck_disputes_status")
        ),
        sa.CheckConstraint(
            "(amount_claimed is null or amount_claimed > 0) and (refund_amount is null or refund_amount > 0)",
            name=op.f("ck_disputes_amounts"),
        ),
        sa.ForeignKeyConstraint(["rental_id"], ["rentals.id"], name=op.f("fk_disputes_rental_id_rentals")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_disputes_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
    )
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disputes_rental_id"), ["rental_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_disputes_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            "uq_disputes_one_open_per_rental",
            ["rental_id"],
            unique=True,
            sqlite_where=sa.text(UNRESOLVED),
            postgresql_where=sa.text(UNRESOLVED),
        )


def downgrade() -> None:
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_disputes_one_open_per_rental",
            sqlite_where=sa.text(UNRESOLVED),
            postgresql_where=sa.text(UNRESOLVED),
        )
        batch_op.drop_index(batch_op.f("ix_disputes_user_id"))
        batch_op.drop_index(batch_op.f("ix_disputes_rental_id"))
    op.drop_table("disputes")
