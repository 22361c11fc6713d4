"""`systemd-unit`: the template mirrormount@.service passes `systemd-analyze verify` (written to
a temporary directory as mirrormount@.service and verified as an instance, which is what
loads the template), and a broken one is caught by the same check."""
from __future__ import annotations

import json

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.cli.unit import find_exe
from mirrormount.views.unit import UNIT_NAME, render_unit, unit_word

ANALYZE = "/usr/bin/systemd-analyze"


def verify(unit_text: str, directory: Path, instance: str = "c1") -> subprocess.CompletedProcess:
    """systemd-analyze verify DIR/mirrormount@INSTANCE.service: the template file is found
    beside the instance name. Default checks: executables, settings, dependencies, man pages."""
    (directory / UNIT_NAME).write_text(unit_text)
    return subprocess.run([ANALYZE, "verify",
                           str(directory / f"mirrormount@{instance}.service")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


def printed(*args: str) -> str:
    r = CliRunner().invoke(app, [*args, "systemd-unit"] if args and args[0].startswith("--b")
                           else ["systemd-unit", *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_printed_unit_passes_systemd_analyze_verify(tmp_path):
    text = printed()
    cp = verify(text, tmp_path)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    exe = find_exe()
    assert exe and os.path.isabs(exe)
    assert f"ExecStart={exe} create --recipe /etc/mirrormount/%i.toml %i\n" in text
    assert f"ExecStart={exe} start %i\n" in text
    assert f"ExecStop=-{exe} stop %i --timeout 30\n" in text
    assert f"ExecStop={exe} destroy --force %i\n" in text


@pytest.mark.parametrize("key,value", [
    ("Type", "oneshot"), ("RemainAfterExit", "yes"), ("KillMode", "control-group"),
    ("After", "local-fs.target"), ("AssertPathExists", "/etc/mirrormount/%i.toml"),
    ("WantedBy", "multi-user.target"), ("TimeoutStopSec", "90s")])
def test_settings(key, value):
    lines = printed().splitlines()
    assert f"{key}={value}" in lines


def test_no_setting_gives_the_service_its_own_mount_namespace():
    keys = {line.split("=", 1)[0] for line in printed().splitlines()
            if "=" in line and not line.startswith("#")}
    assert not keys & {"PrivateTmp", "PrivateMounts", "ProtectSystem", "ProtectHome",
                       "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem",
                       "BindPaths", "RootDirectory", "MountAPIVFS", "PrivateDevices"}


def test_verify_catches_a_broken_unit(tmp_path):
    # The check itself can fail: a missing executable and a bad Type are both refused.
    cp = verify(render_unit("/nonexistent/mirrormount"), tmp_path)
    assert cp.returncode != 0 and "/nonexistent/mirrormount" in cp.stderr
    cp = verify(printed().replace("Type=oneshot", "Type=simple"), tmp_path)
    assert cp.returncode != 0 and "more than one ExecStart" in cp.stderr


def test_exe_with_a_space_and_a_percent_is_quoted_and_still_verifies(tmp_path):
    odd = tmp_path / "my bin%1"
    odd.mkdir()
    exe = odd / "mirrormount"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = printed("--exe", str(exe))
    assert f'ExecStart="{tmp_path}/my bin%%1/mirrormount" start %i' in text
    cp = verify(text, tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert unit_word("a b") == '"a b"' and unit_word("50%") == "50%%"


def test_base_and_state_go_in_the_environment(tmp_path):
    text = printed("--base", "/srv/guests", "--state", "/run/mm2")
    assert "Environment=MIRRORMOUNT_BASE=/srv/guests\n" in text
    assert "Environment=MIRRORMOUNT_STATE=/run/mm2\n" in text
    assert "Environment=" not in printed()          # defaults: nothing to say
    assert verify(text, tmp_path).returncode == 0


def test_stop_timeout():
    text = printed("--stop-timeout", "2.5")
    assert "--timeout 2.5\n" in text and "TimeoutStopSec=62s" in text


@pytest.mark.parametrize("args,needle", [
    (["--exe", "mirrormount"], "absolute path"),
    (["--exe", "/nonexistent/mirrormount"], "not an executable file"),
    (["--exe", "/etc"], "not an executable file"),
    (["--stop-timeout", "0"], "--stop-timeout"),
    (["--stop-timeout", "nan"], "--stop-timeout"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    r = CliRunner().invoke(app, ["systemd-unit", *args])
    assert r.exit_code == 2 and needle in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_json_carries_the_same_unit_text(tmp_path):
    exe = tmp_path / "mirrormount"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    text = CliRunner().invoke(app, ["systemd-unit", "--exe", str(exe)])
    js = CliRunner().invoke(app, ["-J", "systemd-unit", "--exe", str(exe)])
    assert text.exit_code == js.exit_code == 0
    assert json.loads(js.output) == {"unit": "mirrormount@.service", "text": text.output}
