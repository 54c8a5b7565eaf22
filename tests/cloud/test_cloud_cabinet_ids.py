"""``POST /api/cabinets`` accepts exactly the cabinet ids the topics accept (issue 11.6).

Before, the route's schema allowed ``.`` (and the catalog checked nothing), so an operator
could register a cabinet that no topic, certificate or broker role could ever name; the
topic rule (``sync.topics``) is now the one rule, used by the schema and the catalog.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.api_schema import ROUTES
from cloud.app import CTX, create_app, validate
from cloud.config import CloudConfig
from cloud.merchants import Catalog, CatalogError
from sync.topics import is_valid_cabinet_id

PW = "correct horse battery"
CREATE = next(r for r in ROUTES if (r.method, r.path) == ("POST", "/api/cabinets"))
EDGES = ["CAB-1", "a", "x" * 32, "x" * 33, "CAB.1", "-lead", "_lead", "cloud", "Cloud-7", "cloud-x", "CAB-1\n",
         "CAB 1", "CAB/1", "+", "#", "", "caf\u00e9", "\uff21"]  # fmt: skip
ids = (
    st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9._\-\n]{1,34}", fullmatch=True) | st.sampled_from(EDGES)
)


def api_accepts(catalog: Catalog, cabinet_id: str) -> bool:
    """What ``POST /api/cabinets`` does with the id: the body schema, then the catalog."""
    if validate({"id": cabinet_id}, CREATE.body, "body"):
        return False
    try:
        catalog.add_cabinet(cabinet_id)
    except CatalogError as e:
        return "already exists" in str(e)  # accepted the first time hypothesis tried it
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cabinet_id=ids)
def test_the_api_and_the_topics_accept_the_same_cabinet_ids(engine, cabinet_id: str) -> None:
    assert api_accepts(Catalog(engine, lambda: 0.0), cabinet_id) == is_valid_cabinet_id(cabinet_id)


async def test_post_cabinets_refuses_what_the_topics_refuse(aiohttp_client, db_url, tmp_path) -> None:
    app = create_app(
        CloudConfig(database=db_url, scrypt_n=2**10, data_dir=str(tmp_path / "c")), background=False
    )
    app[CTX].accounts.register("ops@example.com", PW, role="operator")
    client = await aiohttp_client(app)
    r = await client.post("/api/login", json={"email": "ops@example.com", "password": PW})
    ops = {"Authorization": f"Bearer {(await r.json())['token']}"}
    for cabinet_id in EDGES:
        r = await client.post("/api/cabinets", json={"id": cabinet_id}, headers=ops)
        expected = 201 if is_valid_cabinet_id(cabinet_id) else 400
        assert r.status == expected, (cabinet_id, await r.text())


@pytest.mark.parametrize("cabinet_id", ["CAB.1", "cloud", "CAB-1\n", "x" * 33])
def test_ids_the_old_schema_let_through_are_refused(engine, cabinet_id: str) -> None:
    with pytest.raises(CatalogError, match="invalid cabinet id"):
        Catalog(engine, lambda: 0.0).add_cabinet(cabinet_id)
