"""fleet alerts raised once and cleared: alert key, subject, last seen, cleared at

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "cleared_at is null"


def upgrade() -> None:
    with op.batch_alter_table("fleet_alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("subject", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_seen", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("cleared_at", sa.Float(), nullable=True))
        batch_op.create_index(
            "uq_fleet_alerts_one_open_per_key",
            ["alert_key"],
            unique=True,
            sqlite_where=sa.text(OPEN),
            postgresql_where=sa.text(OPEN),
        )
    # alerts acknowledged before: point alerts, which end with the acknowledgement
    op.execute("UPDATE fleet_alerts SET cleared_at = acknowledged_at WHERE acknowledged_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("fleet_alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_fleet_alerts_one_open_per_key", sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN)
        )
        batch_op.drop_column("cleared_at")
        batch_op.drop_column("last_seen")
        batch_op.drop_column("subject")
        batch_op.drop_column("alert_key")
