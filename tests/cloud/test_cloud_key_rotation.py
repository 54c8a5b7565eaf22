"""cabinet-cloud keys rotate / retire: a new key signs at once, the old one signs configs through the overlap."""

from __future__ import annotations

import json
import stat

from cloud.cli import main
from cloud.fleet.keys import KeyStoreSigner, load_key, parse_duration
from sync.commands import Command, CommandKind
from sync.config import Config, ConfigBody
from sync.signing import SignedEnvelope


def kid_of(payload: bytes) -> str:
    return SignedEnvelope.decode(payload).key_id


def test_rotate_then_retire_moves_configs_commands_and_the_announcement_along(tmp_path, capsys) -> None:
    d = tmp_path / "cloud"
    assert main(["keys", "--data-dir", str(d)]) == 0
    first = capsys.readouterr().out.split()
    assert len(first) == 1
    k1 = first[0].partition(":")[0]
    signer = load_key(d).signer  # as a running cloud holds it: it follows the files
    assert isinstance(signer, KeyStoreSigner)

    assert main(["keys", "rotate", "--overlap", "7d", "--data-dir", str(d)]) == 0
    lines = capsys.readouterr().out.split()
    k2 = signer.key_id
    assert k2 != k1 and {line.partition(":")[0] for line in lines} == {k1, k2}  # a new cabinet trusts both
    now = signer.clock()
    ann = signer.announcement(now)
    assert set(ann.cloud_keys) == {k1, k2} and ann.retired_keys == ()
    assert abs(ann.key_not_after[k1] - (now + 7 * 86400)) < 60
    assert signer.keys_changed_at(now) > now - 60  # every config is re-signed now
    cfg = Config("CAB-1", 1, now, now + 60, ConfigBody(cloud_keys=dict(ann.cloud_keys)))
    cmd = Command("c1", "CAB-1", 1, now, now + 60, CommandKind.PING, {})
    assert kid_of(signer.sign(cfg)) == k1  # configs: the old key, so cabinets can follow the chain
    assert kid_of(signer.sign(cmd)) == k2  # everything else: the new key

    assert main(["keys", "retire", "--data-dir", str(d)]) == 0
    assert capsys.readouterr().out.split() == [f"{k2}:{load_key(d).public_b64}"]
    ann = signer.announcement(signer.clock())
    assert set(ann.cloud_keys) == {k2} and ann.retired_keys == (k1,)
    assert kid_of(signer.sign(cfg)) == k2
    assert not (d / "keys" / f"{k1}.pem").exists()  # the retired private key is gone
    assert stat.S_IMODE((d / "keys" / f"{k2}.pem").stat().st_mode) == 0o600

    assert main(["keys", "rotate", "--overlap", "1h", "--data-dir", str(d)]) == 0
    capsys.readouterr()
    state = json.loads((d / "keyring.json").read_text())
    k3 = state["current"]
    assert len({k1, k2, k3}) == 3 and [r["id"] for r in state["retired"]] == [k1]
    assert set(signer.announcement(signer.clock()).cloud_keys) == {k2, k3}


def test_after_the_overlap_the_old_key_is_announced_retired_without_a_command(tmp_path) -> None:
    d = tmp_path / "cloud"
    assert main(["keys", "--data-dir", str(d)]) == 0
    t = [1_800_000_000.0]
    signer = KeyStoreSigner(d, clock=lambda: t[0])
    old = signer.key_id
    assert main(["keys", "rotate", "--overlap", "30s", "--data-dir", str(d)]) == 0
    t[0] = signer.state.previous.not_after + 1  # type: ignore[union-attr]
    ann = signer.announcement(t[0])
    assert old not in ann.cloud_keys and ann.retired_keys == (old,)
    assert signer.keys_changed_at(t[0]) == signer.state.previous.not_after  # type: ignore[union-attr]
    cfg = Config("CAB-1", 1, t[0], t[0] + 60, ConfigBody(cloud_keys=dict(ann.cloud_keys)))
    assert kid_of(signer.sign(cfg)) == signer.key_id


def test_durations_and_a_zero_overlap_is_refused(tmp_path, capsys) -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration("36h") == 36 * 3600
    assert parse_duration("90") == 90
    assert main(["keys", "--data-dir", str(tmp_path)]) == 0
    assert main(["keys", "rotate", "--overlap", "0s", "--data-dir", str(tmp_path)]) == 2
    assert main(["keys", "rotate", "--overlap", "soon", "--data-dir", str(tmp_path)]) == 2
