"""docs/cloud.md carries the generated configuration reference and names every CLI command."""

from __future__ import annotations

from pathlib import Path

from cloud.cli import COMMANDS
from cloud.config import config_reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_cloud_docs_embed_the_current_config_reference():
    text = (DOCS / "cloud.md").read_text()
    assert config_reference() in text, (
        "regenerate: python -c 'from cloud.config import config_reference as c; print(c())'"
    )


def test_cloud_docs_mention_every_cli_command_and_money_docs_every_test_card():
    text = (DOCS / "cloud.md").read_text()
    for command in COMMANDS:
        assert f"cabinet-cloud {command}" in text, command
    money = (DOCS / "money.md").read_text()
    for token in ("tok_ok", "tok_decline", "tok_insufficient", "tok_expired", "tok_limit_<n>"):
        assert f"`{token}`" in money


def test_the_api_port_is_the_same_in_the_config_the_unit_and_the_deploy_guide():
    import re

    from cloud.config import CloudConfig

    port = CloudConfig().port
    root = DOCS.parent
    unit = (root / "systemd" / "cabinet-cloud.service").read_text()
    deploy = (DOCS / "deploy.md").read_text()
    assert set(re.findall(r"port (\d+)", unit)) == {str(port)}, "systemd/cabinet-cloud.service"
    assert re.search(rf"API on :{port}\b", deploy), "docs/deploy.md's table of hosts"
