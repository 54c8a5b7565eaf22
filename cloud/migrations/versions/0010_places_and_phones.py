"""places and phones: venue coordinates and opening hours, phone sign-in (issue 15)

- ``venues.lat`` / ``venues.lon`` (WGS 84 degrees, both or neither) and ``venues.opening_hours``
  (OpenStreetMap ``opening_hours`` syntax), with an index on (lat, lon): the nearby query's
  bounding box is a range scan on it (cloud/places.py).
- ``users.phone``: a verified E.164 number, unique (an account signs in with it, or with its
  email and password, or both).
- ``sms_codes``: one pending one-time sign-in code per phone, kept only as a salted hash, with its
  expiry and the wrong attempts so far.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("venues") as b:
        b.add_column(sa.Column("lat", sa.Float(), nullable=True))
        b.add_column(sa.Column("lon", sa.Float(), nullable=True))
        b.add_column(sa.Column("opening_hours", sa.Text(), nullable=True))
    op.create_index("ix_venues_lat_lon", "venues", ["lat", "lon"], unique=False)
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("phone", sa.String(length=16), nullable=True))
    op.create_index("ix_users_phone", "users", ["phone"], unique=True)
    op.create_table(
        "sms_codes",
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_sms_codes")),
    )


def downgrade() -> None:
    op.drop_table("sms_codes")
    op.drop_index("ix_users_phone", table_name="users")
    with op.batch_alter_table("users") as b:
        b.drop_column("phone")
    op.drop_index("ix_venues_lat_lon", table_name="venues")
    with op.batch_alter_table("venues") as b:
        b.drop_column("opening_hours")
        b.drop_column("lon")
        b.drop_column("lat")
