"""cabinet-cloud sub-commands, run in-process through main(argv)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from sqlalchemy import update

from cloud.cli import main
from cloud.db import make_engine, rentals


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in (
        "serve",
        "migrate",
        "money-check",
        "settlement",
        "create-merchant",
        "create-user",
        "sweep",
    ):
        assert command in out


def test_migrate_and_create_merchant_and_user(db, capsys, monkeypatch):
    assert main(["migrate", "--database", db]) == 0
    assert "schema revision 0010" in capsys.readouterr().out
    assert main(["create-merchant", "--database", db, "Cafe", "--share-bp", "3000", "--currency", "EUR"]) == 0
    assert json.loads(capsys.readouterr().out)["revenue_share_bp"] == 3000
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["create-user", "--database", db, "ops@example.com", "--operator", "--password-stdin"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "operator"
    assert main(["create-merchant", "--database", db, "Bad", "--share-bp", "20000", "--currency", "EUR"]) == 2
    assert "revenue_share_bp" in capsys.readouterr().err


def test_money_check_exit_code_follows_the_books(world, db_url, clock, capsys):
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    ev = world.event(
        "CAB-A", "rental_started", mono=0.0, boot="a", rental_id=start.rental_id, sn="S1", source="cloud"
    )
    world.service.on_rental_started("CAB-A", ev)
    clock.advance(7200)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=7200.0, boot="a", sn="S1")
    )
    assert main(["money-check", "--database", db_url]) == 0
    assert "money-check OK" in capsys.readouterr().out
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(update(rentals).values(refunded=1))
    engine.dispose()
    assert main(["money-check", "--database", db_url]) == 1
    err = capsys.readouterr().err
    assert (
        "money-check FAILED" in err
        and f"rental {start.rental_id}: payments refunded 0 but the rental says 1" in err
    )
    assert main(["money-check", "--database", db_url, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_settlement_csv_from_the_command_line(world, db_url, capsys):
    assert main(["settlement", "--database", db_url, str(world.merchant.id), "--from", "2026-09-01", "--to", "2026-10-01",
                 "--format", "csv"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rental_id,") and lines[-1].startswith("TOTAL,0 rentals")


def test_bad_config_file_is_named(tmp_path, capsys):
    cfg = tmp_path / "cloud.toml"
    cfg.write_text('[cloud]\ndatabse = "x"\n')
    assert main(["migrate", "--config", str(cfg)]) == 2
    assert "unknown key cloud.databse" in capsys.readouterr().err


def test_serve_answers_health_and_stops_cleanly(tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'[cloud]\ndatabase = "{tmp_path / "serve.db"}"\nport = {port}\nmode = "sandbox"\n')
    proc = subprocess.Popen([sys.executable, "-m", "cloud.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                    assert json.loads(r.read()) == {"ok": True, "schema": "0010"}
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "serve did not answer within 20 s"
                time.sleep(0.1)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
