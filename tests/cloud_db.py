"""A migrated cloud database for a test, on SQLite (a temp file) and on PostgreSQL (a pytest plugin,
registered in ``tests/conftest.py``, used by the cloud tests and the end-to-end tests).

PostgreSQL comes from env CABINET_TEST_PG_URL (default: the local server, user postgres,
database test); the suite creates its own database there and drops it at the end.

The cloud's stack (SQLAlchemy, Alembic: the ``cloud`` extra) is imported only when a test asks
for a database, so the tests of a cabinet's install run without it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloud.db import make_engine, migrate

    path = tmp_path_factory.mktemp("cloud-db") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection's close folds the WAL into the file we copy
    return path


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    from sqlalchemy import create_engine, make_url, text

    from cloud.db import make_engine, migrate

    admin_url = os.environ.get("CABINET_TEST_PG_URL", PG_DEFAULT)
    name = f"cloud_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:
        admin.dispose()
        pytest.skip(
            f"PostgreSQL not reachable at {admin_url} ({type(e).__name__}); "
            "set CABINET_TEST_PG_URL=postgresql+psycopg://user@host:port/db to a server where the user may CREATE DATABASE"
        )
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database on each engine."""
    if request.param == "sqlite":
        path = tmp_path / "cloud.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    from sqlalchemy import create_engine, text

    from cloud.db import metadata

    url: str = request.getfixturevalue("pg_database_url")
    engine = create_engine(url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url
