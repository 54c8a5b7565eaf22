"""fleet side: ingest progress, fleet view, alerts, event conflicts, signed config, command payloads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 19:17:15.912362
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Generated from cloud.db.metadata by alembic --autogenerate, then reviewed.
    op.create_table(
        "cabinet_event_conflicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("stored_event_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("at_wall", sa.Float(), nullable=False),
        sa.Column("at_mono", sa.Float(), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cabinet_event_conflicts")),
        sa.UniqueConstraint(
            "cabinet_id", "event_id", name=op.f("uq_cabinet_event_conflicts_cabinet_id_event_id")
        ),
    )
    with op.batch_alter_table("cabinet_event_conflicts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cabinet_event_conflicts_cabinet_id"), ["cabinet_id"], unique=False
        )

    op.create_table(
        "cabinet_settings",
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("rentable_min_soc", sa.Integer(), nullable=True),
        sa.Column("power_budget_w", sa.Integer(), nullable=True),
        sa.Column("battery_deny_list", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cabinet_id", name=op.f("pk_cabinet_settings")),
    )
    op.create_table(
        "config_versions",
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("published_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("counter", name=op.f("pk_config_versions")),
    )
    with op.batch_alter_table("config_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_config_versions_cabinet_id"), ["cabinet_id"], unique=False)

    op.create_table(
        "fleet_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("acknowledged_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_alerts")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_fleet_alerts_dedupe_key")),
    )
    with op.batch_alter_table("fleet_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fleet_alerts_cabinet_id"), ["cabinet_id"], unique=False)

    op.create_table(
        "fleet_cabinets",
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("state_at", sa.Float(), nullable=True),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.Column("backlog", sa.BigInteger(), nullable=True),
        sa.Column("versions", sa.Text(), nullable=True),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("telemetry_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("cabinet_id", name=op.f("pk_fleet_cabinets")),
    )
    op.create_table(
        "fleet_slots",
        sa.Column("cabinet_id", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("battery_sn", sa.String(length=64), nullable=True),
        sa.Column("soc", sa.Integer(), nullable=True),
        sa.Column("temp_dc", sa.Integer(), nullable=True),
        sa.Column("voltage_mv", sa.Integer(), nullable=True),
        sa.Column("current_ma", sa.Integer(), nullable=True),
        sa.Column("faults", sa.BigInteger(), nullable=True),
        sa.Column("quarantined", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("fault_kind", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cabinet_id", "slot", name=op.f("pk_fleet_slots")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("sent_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.Float(), nullable=True))


def downgrade() -> None:
    # Generated from cloud.db.metadata by alembic --autogenerate, then reviewed.
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_column("finished_at")
        batch_op.drop_column("sent_at")
        batch_op.drop_column("payload")

    op.drop_table("fleet_slots")
    op.drop_table("fleet_cabinets")
    with op.batch_alter_table("fleet_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fleet_alerts_cabinet_id"))

    op.drop_table("fleet_alerts")
    with op.batch_alter_table("config_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_config_versions_cabinet_id"))

    op.drop_table("config_versions")
    op.drop_table("cabinet_settings")
    with op.batch_alter_table("cabinet_event_conflicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cabinet_event_conflicts_cabinet_id"))

    op.drop_table("cabinet_event_conflicts")
