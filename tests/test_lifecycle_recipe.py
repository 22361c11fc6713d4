"""Recipes and command-line words of the lifecycle: name, init, stop_signal, start, shutdown
and joins; a bad one is a UsageError naming the file, the key and what was expected."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mirrormount.errors import UsageError
from mirrormount.guest.model import parse_init, parse_joins, parse_signal, signal_name
from mirrormount.guest.recipe import load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_lifecycle_keys_reach_the_request():
    r = parse_recipe('[guest]\nname = "w1"\ninit = "/bin/busybox init --x \'a b\'"\n'
                     'stop_signal = "SIGRTMIN+3"\njoins = { net = "c1", uts = "c2" }\n')
    req = r.request(r.name or "")
    assert req.name == "w1" and req.init == ("/bin/busybox", "init", "--x", "a b")
    assert req.joins == (("uts", "c2"), ("net", "c1"))        # setns order
    assert req.stop_signal == "SIGRTMIN+3"
    assert req.all_kinds == ("uts", "net", "pid", "mnt")       # init implies pid


def test_init_as_a_list_and_init_less_commands():
    r = parse_recipe('[guest]\ninit = ["/sbin/init", "--x"]\n')
    assert r.init == ("/sbin/init", "--x")
    r = parse_recipe('[guest]\nstart = ["/etc/rc.start"]\nshutdown = ["a", "b"]\n')
    assert r.start == ("/etc/rc.start",) and r.shutdown == ("a", "b") and r.init == ()


@pytest.mark.parametrize("text, words", [
    ('init = 3', ["f.toml [guest]", "init", "command string"]),
    ('init = []', ["init", "non-empty list"]),
    ('init = "\'open"', ["init", "quotation"]),
    ('stop_signal = "NOPE"', ["f.toml [guest]", "stop_signal", "unknown signal"]),
    ('stop_signal = "KILL"', ["stop_signal", "cannot be a stop signal"]),
    ('start = "x"', ["start", "list of commands"]),
    ('shutdown = [""]', ["shutdown", "list of commands"]),
    ('joins = { mnt = "c1" }', ["joins", "cannot be joined"]),
    ('joins = { pid = "c1" }', ["joins", "cannot be joined"]),
    ('joins = { net = 1 }', ["joins", "table of kind"]),
    ('joins = { net = "bad name" }', ["joins", "invalid guest name"]),
    ('name = "host"', ["name", "reserved"]),
    ('init = "/sbin/init"\nshutdown = ["x"]', ["init-less"]),
])
def test_bad_lifecycle_keys_name_file_key_and_expectation(text, words):
    with pytest.raises(UsageError) as err:
        parse_recipe(f"[guest]\n{text}\n", "f.toml")
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("spec, num", [("TERM", 15), ("SIGTERM", 15), ("15", 15),
                                       ("sigusr1", int(signal.SIGUSR1)),
                                       ("SIGRTMIN+3", int(signal.SIGRTMIN) + 3),
                                       ("RTMIN", int(signal.SIGRTMIN)),
                                       ("SIGRTMAX-1", int(signal.SIGRTMAX) - 1)])
def test_signals_by_name_or_number(spec, num):
    assert parse_signal(spec) == num
    assert parse_signal(signal_name(num)) == num


@pytest.mark.parametrize("spec", ["", "9", "KILL", "STOP", "SIGFOO", "RTMIN+99", "TERM+1",
                                  "0", "-3"])
def test_bad_signals(spec):
    with pytest.raises(UsageError):
        parse_signal(spec)


def test_init_split_as_a_shell_would():
    assert parse_init("sh -c 'sleep 1; echo \"a b\"'") == ("sh", "-c", 'sleep 1; echo "a b"')
    assert parse_init(None) == ()
    for bad in ("", "   ", "'x"):
        with pytest.raises(UsageError):
            parse_init(bad)


def test_joins_from_the_command_line():
    assert parse_joins(["net=c1", "ipc=c2"]) == (("ipc", "c2"), ("net", "c1"))
    for bad in (["net"], ["net="], ["mnt=c1"], ["net=c1", "net=c2"], ["user=c1"]):
        with pytest.raises(UsageError):
            parse_joins(bad)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_parse(path):
    r = load_recipe(str(path))
    assert r.rootfs.startswith("/")
