"""views.metrics: the Prometheus text exposition format, checked with the reference parser
(prometheus_client.parser.text_string_to_metric_families), on facts built from captured
mount tables (fixtures/mountinfo/README.md) through guest.health.assess, as `status` builds
them; plus the CLI's refusals that need no root."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from fixture_files import MOUNTINFO, mountinfo_table
from mirrormount.cli import app
from mirrormount.cli.metrics import count_mounts, read_mount_max
from mirrormount.guest.health import assess
from mirrormount.views.metrics import (STATES, GuestFacts, escape_label, families, number,
                                       render)

BASE = "/container"


def parsed(text: str) -> dict[str, list]:
    """family name -> [(labels, value)], through the reference parser."""
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.type == "gauge" and fam.documentation, fam
        out[fam.name] = [(s.labels, s.value) for s in fam.samples]
    return out


def facts_from_fixtures(scenario: str, guests: dict[str, str], states: dict[str, str],
                        pins: dict[str, int]) -> list[GuestFacts]:
    host = mountinfo_table(f"{scenario}.host")
    out = []
    for name, mode in guests.items():
        guest = mountinfo_table(f"{scenario}.guest-{name}")
        h = assess(f"{BASE}/{name}", mode, host, guest, BASE)
        out.append(GuestFacts(name, states[name], h.mounts_host, h.mounts_guest,
                              h.mirror_intact, pins[name], min(pins[name], 1)))
    return out


def test_every_family_parses_with_the_reference_parser():
    facts = facts_from_fixtures("private-c123", {"c1": "mirror", "c2": "mirror+host",
                                                 "c3": "mirror"},
                                {"c1": "running", "c2": "stopped", "c3": "running"},
                                {"c1": 2, "c2": 0, "c3": 0})
    host_mounts = len(mountinfo_table("private-c123.host"))
    text = render(families(facts, 100000, host_mounts))
    m = parsed(text)
    assert list(m) == ["mirrormount_guests", "mirrormount_guest_state",
                       "mirrormount_guest_mounts", "mirrormount_mirror_intact",
                       "mirrormount_guest_pins", "mirrormount_guest_pinned_mounts",
                       "mirrormount_mount_max", "mirrormount_namespace_mounts",
                       "mirrormount_mount_max_headroom"]
    assert m["mirrormount_guests"] == [({"state": "running"}, 2), ({"state": "stopped"}, 1),
                                       ({"state": "broken"}, 0)]
    assert ({"guest": "c2", "state": "stopped"}, 1) in m["mirrormount_guest_state"]
    mounts = {(lab["guest"], lab["side"]): v for lab, v in m["mirrormount_guest_mounts"]}
    for name in ("c1", "c2", "c3"):
        assert mounts[(name, "host")] == len(
            mountinfo_table("private-c123.host").under(f"{BASE}/{name}"))
        assert mounts[(name, "guest")] == len(mountinfo_table(f"private-c123.guest-{name}"))
    assert mounts[("c3", "guest")] == mounts[("c1", "guest")] + 1    # c3's own /proc
    assert m["mirrormount_mirror_intact"] == [({"guest": g}, 1) for g in ("c1", "c2", "c3")]
    assert ({"guest": "c1"}, 2) in m["mirrormount_guest_pins"]
    assert m["mirrormount_mount_max"] == [({}, 100000)]
    headroom = {lab["namespace"]: v for lab, v in m["mirrormount_mount_max_headroom"]}
    assert headroom["host"] == 100000 - host_mounts
    assert headroom["c3"] == 100000 - mounts[("c3", "guest")]
    assert text.endswith("\n") and "# TYPE mirrormount_guests gauge\n" in text


def test_a_broken_mirror_reads_0():
    facts = facts_from_fixtures("rshared-c1-rprivate", {"c1": "mirror"}, {"c1": "running"},
                                {"c1": 0})
    m = parsed(render(families(facts, 50, 40)))
    assert m["mirrormount_mirror_intact"] == [({"guest": "c1"}, 0)]
    # Past the limit is said as it is: negative headroom, not clamped.
    assert ({"namespace": "host"}, 10) in m["mirrormount_mount_max_headroom"]


def test_no_guests_still_says_every_state_and_the_host():
    m = parsed(render(families([], 100000, 30)))
    assert m["mirrormount_guests"] == [({"state": s}, 0) for s in STATES]
    assert m["mirrormount_namespace_mounts"] == [({"namespace": "host"}, 30)]
    assert m["mirrormount_guest_state"] == [] and m["mirrormount_guest_mounts"] == []


def test_unknown_facts_are_left_out_not_zero():
    facts = [GuestFacts("c9", "broken"), GuestFacts("c8", "starting", 3, 4, True)]
    m = parsed(render(families(facts, None, 30, pins_counted=False)))
    assert "mirrormount_guest_pins" not in m and "mirrormount_mount_max" not in m
    assert "mirrormount_mount_max_headroom" not in m
    assert ({"state": "starting"}, 1) in m["mirrormount_guests"]     # a new state is kept
    assert [lab["guest"] for lab, _ in m["mirrormount_guest_mounts"]] == ["c8", "c8"]
    assert m["mirrormount_mirror_intact"] == [({"guest": "c8"}, 1)]


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "new\nline", "tab\tx", "ü"])
def test_label_values_round_trip(value):
    text = render(families([GuestFacts(value, "running", 1, 1, True, 0, 0)], 10, 1))
    m = parsed(text)
    assert ({"guest": value, "state": "running"}, 1) in m["mirrormount_guest_state"]
    assert len(text.splitlines()) == text.count("\n")                 # no raw newline added
    assert escape_label('"\\\n') == '\\"\\\\\\n'


def test_numbers():
    assert number(3.0) == "3" and number(-2.0) == "-2" and number(0.5) == "0.5"
    assert number(float("inf")) == "+Inf" and number(float("nan")) == "NaN"


def test_readers(tmp_path):
    (tmp_path / "max").write_text("4096\n")
    (tmp_path / "bad").write_text("x\n")
    assert read_mount_max(str(tmp_path / "max")) == 4096
    assert read_mount_max(str(tmp_path / "bad")) is None
    assert read_mount_max(str(tmp_path / "missing")) is None
    fixture = tmp_path / "mi"
    fixture.write_bytes((MOUNTINFO / "private-c123.host.mountinfo").read_bytes())
    assert count_mounts(str(fixture)) == len(mountinfo_table("private-c123.host"))


def test_help_names_the_format_and_the_json_shape():
    r = CliRunner().invoke(app, ["metrics", "--help"])
    assert r.exit_code == 0
    text = r.output.replace("\n ", "")
    assert "Prometheus" in text and "--json" in text


# ------------------------------------------------------------------ the README's timer
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_units() -> dict[str, str]:
    """The README's textfile-collector service and timer: file name -> text, from the ```ini
    block of the Metrics section (each unit starts with a `# /etc/systemd/system/X` line)."""
    text = README.read_text()
    block = text.split("```ini\n", 1)[1].split("```", 1)[0]
    units: dict[str, str] = {}
    name = ""
    for line in block.splitlines(keepends=True):
        if line.startswith("# /etc/systemd/system/"):
            name = line.split("/")[-1].strip()
            units[name] = ""
        elif name:
            units[name] += line
    return units


def readme_metrics_command() -> str:
    """The shell command of the README's service (its ExecStart=, /bin/sh -c '...')."""
    service = readme_units()["mirrormount-metrics.service"]
    line = next(x for x in service.splitlines() if x.startswith("ExecStart=/bin/sh -c '"))
    return line[len("ExecStart=/bin/sh -c '"):-1]


def test_readme_timer_and_service_pass_systemd_analyze_verify(tmp_path):
    units = readme_units()
    assert set(units) == {"mirrormount-metrics.service", "mirrormount-metrics.timer"}
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    cp = subprocess.run(["/usr/bin/systemd-analyze", "verify",
                         *(str(tmp_path / n) for n in units)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    # No "$" for systemd to expand, and a rename within one directory.
    command = readme_metrics_command()
    assert "$" not in command and "mv " in command
    tmp, final = command.split("exec mv ")[1].split()
    assert tmp.rsplit("/", 1)[0] == final.rsplit("/", 1)[0] and final.endswith(".prom")
    assert not tmp.endswith(".prom")          # node_exporter reads only *.prom
