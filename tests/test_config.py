"""The cabinet's config: defaults, validation messages, and the generated reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cabinet import config as cfg

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cabinet.toml"
    p.write_text(text)
    return p


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, '[cabinet]\nid = "CAB-1"\n'))
    assert c["cabinet.id"] == "CAB-1"
    assert c["rent.min_soc"] == 80
    assert c["rent.eject_timeout_s"] == 30.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[cabinet]\nid = "A"\n[rent]\nmin_soc = 120\n', "rent.min_soc = 120 is above the maximum 100"),
        ('[cabinet]\nid = "A"\n[rent]\nmin_sco = 50\n', "unknown key rent.min_sco"),
        ('[cabinet]\nid = "A"\n[rnet]\n', "unknown section [rnet]"),
        ('[cabinet]\nid = "A"\n[bus]\ntimeout_s = "fast"\n', "bus.timeout_s must be float"),
        ('[cabinet]\nid = "A"\n[sync]\ntls = 1\n', "sync.tls must be bool"),
        ("[cabinet]\nslots = 8\n", "cabinet.id is required"),
        ('[cabinet]\nid = "a b"\n', "cabinet.id: invalid cabinet id"),
        (
            '[cabinet]\nid = "A"\nslots = 2\n[locks]\nlock_pins = ["1"]\n',
            "lists 1 pins but cabinet.slots is 2",
        ),
        ("[cabinet\nid=", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.load(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read config file"):
        cfg.load(tmp_path / "nope.toml")


def test_secrets_are_redacted(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, '[cabinet]\nid = "A"\n[sync]\nkey_file = "/etc/cabinet/key.pem"\n'))
    assert c.redacted()["sync"]["key_file"] == "<redacted>"
    assert c.redacted()["sync"]["broker_host"] == "localhost"


def test_configuration_reference_is_current() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == cfg.docs_markdown(), (
        "docs/configuration.md is stale: run `cabinet config docs > docs/configuration.md`"
    )


@pytest.mark.parametrize("cabinet_id", ["-CAB1", "_x", "cloud", "cloud-2", "CAB 1", "C" * 33, "CAB-1\n"])
def test_config_refuses_a_cabinet_id_the_wire_and_the_cloud_refuse(tmp_path, cabinet_id) -> None:
    """One rule for cabinet ids (sync.topics): a cabinet configured with an id the cloud's API,
    the topics or the certificates refuse could never sync."""
    from sync.topics import is_valid_cabinet_id

    assert not is_valid_cabinet_id(cabinet_id)
    f = tmp_path / "c.toml"
    f.write_text(f"[cabinet]\nid = {json.dumps(cabinet_id)}\n")
    with pytest.raises(cfg.ConfigError, match=r"cabinet\.id"):
        cfg.load(f)
