"""cabinet claims kept but not applied, for a human to resolve

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


STATUSES = "status in ('pending', 'open', 'resolving', 'accepted', 'rejected')"


def upgrade() -> None:
    op.create_table(
        "cabinet_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("at_wall", sa.Float(), nullable=False),
        sa.Column("at_mono", sa.Float(), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("applied", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("rental_id", sa.String(length=64), nullable=True),
        sa.Column("battery_sn", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("resolved_at", sa.Float(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.CheckConstraint(STATUSES, name=op.f("ck_cabinet_claims_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cabinet_claims")),
        sa.UniqueConstraint("cabinet_id", "event_id", name=op.f("uq_cabinet_claims_cabinet_id_event_id")),
    )
    with op.batch_alter_table("cabinet_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cabinet_claims_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_cabinet_claims_battery_sn"), ["battery_sn"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cabinet_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cabinet_claims_battery_sn"))
        batch_op.drop_index(batch_op.f("ix_cabinet_claims_status"))
    op.drop_table("cabinet_claims")
