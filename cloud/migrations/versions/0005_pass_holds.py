"""offline passes: the hold placed at issue, pass state and fleet-wide use

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("passes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("hold_each", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("hold_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("revoke_reason", sa.Text(), nullable=True))
    op.create_table(
        "pass_holds",
        sa.Column("pass_id", sa.String(length=64), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hold_ref", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("rental_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "status in ('placing', 'held', 'assigned', 'released', 'declined')",
            name=op.f("ck_pass_holds_status"),
        ),
        sa.ForeignKeyConstraint(["pass_id"], ["passes.pass_id"], name=op.f("fk_pass_holds_pass_id_passes")),
        sa.PrimaryKeyConstraint("pass_id", "k", name=op.f("pk_pass_holds")),
        sa.UniqueConstraint("rental_id", name=op.f("uq_pass_holds_rental_id")),
    )
    with op.batch_alter_table("pass_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pass_holds_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pass_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pass_holds_status"))
    op.drop_table("pass_holds")
    with op.batch_alter_table("passes", schema=None) as batch_op:
        batch_op.drop_column("revoke_reason")
        batch_op.drop_column("hold_status")
        batch_op.drop_column("hold_each")
        batch_op.drop_column("currency")
