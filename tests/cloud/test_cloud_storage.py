"""The migrations build exactly the declared schema on both engines, and money rows are append-only."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from cloud.db import cabinet_events, journal_entries, make_engine, metadata, migrate, schema_revision


def test_migrations_match_declared_tables(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []
    assert schema_revision(engine) == "0010"


def test_migrate_is_idempotent_and_upgrades_from_first_revision(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0001")
    assert schema_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(insert(journal_entries).values(kind="x", idempotency_key="k1", created_at=1.0))
    migrate(engine)
    migrate(engine)
    assert schema_revision(engine) == "0010"
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from journal_entries")).scalar_one() == 1
    engine.dispose()


def test_journal_refuses_update_and_delete(engine):
    with engine.begin() as conn:
        conn.execute(insert(journal_entries).values(kind="x", idempotency_key="k1", created_at=1.0))
    for statement in ("update journal_entries set kind = 'y'", "delete from journal_entries"):
        with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))


def test_cabinet_event_is_unique_by_cabinet_and_seq(engine):
    row = dict(
        cabinet_id="CAB-1", seq=1, event_id="e1", type="t", at_wall=1.0, at_mono=1.0, boot_id="b", body="{}"
    )
    with engine.begin() as conn:
        conn.execute(insert(cabinet_events).values(**row, received_at=2.0))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert(cabinet_events).values(**{**row, "event_id": "e2"}, received_at=3.0))
