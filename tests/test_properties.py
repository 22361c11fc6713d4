"""Properties of the pure parsers and validators, checked on generated input (hypothesis).

What each section proves, whatever the input:
  mountinfo  parse_line(format_line(m)) == m for any Mount (paths with spaces, tabs,
             newlines, backslashes, typed-in "\\040", non-ASCII, undecodable bytes, up to
             PATH_MAX); format_line matches the kernel byte for byte on every captured line;
             parse never fails with anything but ParseError.
  names      validate_name accepts exactly NAME_RE minus the reserved words and refuses
             everything else with a one-line UsageError (exit 2); an accepted name is one
             plain path component under BASE and STATE.
  validators namespace kinds, propagation modes and hostnames (RFC 1123, at most 64
             bytes) are accepted exactly when their rule says so, else a one-line
             UsageError.
  recipes    a valid recipe (written as TOML by a small writer here) parses to exactly
             what it says; one with a mistake is refused with a one-line UsageError
             naming the key; any document, text or file is a Recipe or a UsageError.

Nothing here touches the system: conftest.py's syscall guard stays on for every example.
"""
from __future__ import annotations

import os
import posixpath
import re
import string
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fixture_files import mountinfo_names, mountinfo_text
from mirrormount.record import replace
from mirrormount.cli import app
from mirrormount.errors import EXIT_USAGE, UsageError
from mirrormount.guest.model import (DEFAULT_PROPAGATION, EXTRA_KINDS, NAME_RE,
                                     PROPAGATION_MODES, RESERVED_NAMES, CreateRequest, Layout,
                                     is_valid_name, parse_kinds, validate_hostname,
                                     validate_kinds, validate_name, validate_propagation)
from mirrormount.guest.recipe import (GUEST_KEYS, MOUNT_KEYS, Recipe, RecipeMount,
                                      load_recipe, parse_recipe)
from mirrormount.kernel.mountinfo import (Mount, ParseError, escape, format_line, parse,
                                          parse_line, unescape)

# Reproducible by default. derandomize=True seeds every test from its own source, so CI and
# a developer's machine try the same examples: a red run stays red on re-run and a green
# one cannot turn red by luck. database=None because derandomized runs gain nothing from
# replaying old failures, and so nothing from an earlier run changes what is tried.
# (Hypothesis still caches unicode tables and the code's constants in .hypothesis/, which
# git-ignores itself; the examples drawn are the same with or without that cache.) The
# price is that a run never explores beyond those examples; MIRRORMOUNT_HYPOTHESIS=explore
# draws fresh random ones, 20 times as many, for a developer hunting bugs. deadline=None and no
# too_slow health check: a time limit would make the verdict depend on the machine's load.
# The budgets keep the whole file to a few seconds.
EXPLORE = os.environ.get("MIRRORMOUNT_HYPOTHESIS") == "explore"


def budget(examples: int) -> settings:
    return settings(max_examples=examples * (20 if EXPLORE else 1), derandomize=not EXPLORE,
                    database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1


# ============================================================================ mountinfo
# PATH_MAX counts the terminating NUL (include/uapi/linux/limits.h): 4095 bytes of path.
PATH_MAX = 4096
# What makes mountinfo parsing hard: the kernel's escaped set (space, tab, newline,
# backslash), octal escapes typed literally by a user, the field separator, characters the
# kernel leaves raw but str.splitlines() would split on, non-ASCII, and the optional
# field words themselves.
TRICKY = [" ", "\t", "\n", "\\", "\\040", "\\011", "\\012", "\\134", "\\0401", "\\8", "\\\\",
          "-", " - ", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "ü", "€", "日本", "😀",
          "/", "//", "..", "shared:1", "master:2", "unbindable", "rw", ","]
# Text as a user types it: any character but NUL and lone surrogates (those come only from
# undecodable bytes, below).
typed = st.characters(exclude_characters="\0", exclude_categories=["Cs"])
piece = st.one_of(st.sampled_from(TRICKY), st.text(typed, max_size=6))
# Paths come from /proc decoded with surrogateescape (mountinfo.read), so a name that is not
# UTF-8 arrives as lone surrogates; a path never holds NUL.
undecodable = st.binary(max_size=40).map(
    lambda b: b.replace(b"\0", b"").decode("utf-8", "surrogateescape"))


def _long(unit: str, times: int) -> str:
    """unit repeated into a path of at most PATH_MAX - 1 bytes (cut mid-character if it
    must be: the cut bytes decode as surrogates, as an undecodable name would)."""
    data = ("/" + unit).encode("utf-8", "surrogateescape") * times
    return data[:PATH_MAX - 1].decode("utf-8", "surrogateescape")


paths = st.one_of(st.lists(piece, max_size=10).map("".join), undecodable,
                  st.builds(_long, piece, st.integers(1, PATH_MAX)))


def _seq_escape(text: str, chars: str) -> str:
    """seq_escape(): the chars given as three-digit octal (fs/seq_file.c)."""
    return "".join(f"\\{ord(c):03o}" if c in chars else c for c in text)


def _show_option(name: str, value: str | None) -> str:
    """One filesystem option as seq_show_option() writes it (include/linux/seq_file.h):
    the name escapes ",= \\t\\n\\\\", the value ", \\t\\n\\\\"."""
    out = "," + _seq_escape(name, ",= \t\n\\")
    return out if value is None else out + "=" + _seq_escape(value, ", \t\n\\")


# Per-mount flags in show_mnt_opts()'s table order (fs/proc_namespace.c).
MNT_FLAGS = [",nosuid", ",nodev", ",noexec", ",noatime", ",nodiratime", ",relatime",
             ",nosymfollow", ",idmapped"]
mount_options = st.builds(lambda ro, flags: ro + "".join(f for f in MNT_FLAGS if f in flags),
                          st.sampled_from(["rw", "ro"]), st.sets(st.sampled_from(MNT_FLAGS)))
super_options = st.builds(
    lambda ro, opts: ro + "".join(_show_option(n, v) for n, v in opts),
    st.sampled_from(["rw", "ro"]), st.lists(st.tuples(piece, st.none() | piece), max_size=4))
# "type[.subtype]": a FUSE subtype is chosen by whoever mounts, so it may hold anything.
fstypes = st.builds(lambda t, sub: t if sub is None else f"{t}.{sub}",
                    st.text(string.ascii_lowercase + string.digits + "_", min_size=1, max_size=10),
                    st.none() | paths)
group = st.none() | st.integers(1, 2**31 - 1)           # printed with %i
mounts = st.builds(
    Mount, mount_id=st.integers(0, 2**31 - 1), parent_id=st.integers(0, 2**31 - 1),
    major=st.integers(0, 2**32 - 1), minor=st.integers(0, 2**32 - 1),   # %u
    root=paths, mountpoint=paths, options=mount_options, shared=group, master=group,
    propagate_from=group, unbindable=st.booleans(), fstype=fstypes,
    source=st.one_of(paths, st.just("none")), super_options=super_options)


@budget(120)
@given(mounts)
def test_format_then_parse_is_the_identity(m):
    line = format_line(m)
    assert parse_line(line) == m
    assert parse_line(line + "\n") == m


@budget(40)
@given(mounts)
def test_a_formatted_line_is_one_record_of_eleven_fields_plus_tags(m):
    fields = format_line(m).split(" ")
    tags = 3 - [m.shared, m.master, m.propagate_from].count(None) + m.unbindable
    assert not any("\n" in f or "\t" in f for f in fields)
    assert len(fields) == 10 + tags and fields[6 + tags] == "-"


@budget(20)
@given(st.lists(mounts, max_size=8))
def test_a_whole_table_round_trips(ms):
    text = "".join(format_line(m) + "\n" for m in ms)
    assert parse(text) == tuple(ms)


@pytest.mark.parametrize("name", mountinfo_names())
def test_format_line_is_the_kernels_own_text(name):
    """On every captured file (fixtures/mountinfo), byte for byte."""
    text = mountinfo_text(name)
    lines = text[:-1].split("\n")
    assert [format_line(parse_line(line)) for line in lines] == lines


@pytest.mark.parametrize("field", ["options", "super_options"])
@pytest.mark.parametrize("bad", ["rw,a b", "rw\nx"])
def test_format_refuses_option_text_the_kernel_never_writes(field, bad):
    m = Mount(1, 1, 0, 1, "/", "/", "rw", fstype="tmpfs", source="t", super_options="rw")
    with pytest.raises(ValueError, match=field):
        format_line(replace(m, **{field: bad}))


@budget(120)
@given(st.text(typed) | undecodable | paths)
def test_escape_is_reversible_and_leaves_no_separator(text):
    escaped = escape(text)
    assert unescape(escaped) == text
    assert not {" ", "\t", "\n"} & set(escaped)
    # every backslash left starts an escape, so no typed-in "\040" can be misread
    assert re.fullmatch(r"(?:[^\\]|\\[0-7]{3})*", escaped, re.DOTALL)


KNOWN_TAGS = ("shared", "master", "propagate_from")
# A tag a newer kernel might add: "tag[:value]" with no space, not a tag we know.
unknown_tags = st.text(st.characters(exclude_characters=" \n"), min_size=1, max_size=12).filter(
    lambda t: t not in ("-", "unbindable") and t.partition(":")[0] not in KNOWN_TAGS)


@budget(60)
@given(mounts, st.lists(unknown_tags, max_size=3), st.randoms(use_true_random=False))
def test_optional_fields_in_any_order_and_unknown_ones_ignored(m, extra, rnd):
    """proc_pid_mountinfo(5): "Parsers should ignore all unrecognized optional fields"."""
    fields = format_line(m).split(" ")
    sep = fields.index("-", 6)
    tags = fields[6:sep] + extra
    rnd.shuffle(tags)
    assert parse_line(" ".join(fields[:6] + tags + fields[sep:])) == m


@pytest.mark.parametrize("tag", ["shared", "master:", "propagate_from:x", "shared:1:2"])
def test_a_known_tag_without_its_number_is_a_parse_error(tag):
    # unlike an unknown tag, this one the kernel did write, and its peer group is lost
    with pytest.raises(ParseError, match="optional field"):
        parse_line(f"36 35 98:0 / /mnt rw {tag} - ext3 /dev/root rw")


# ----------------------------------------------------------------------------- any input
@st.composite
def damaged_lines(draw) -> str:
    """A real record with one field dropped, doubled or changed, or cut short."""
    fields = format_line(draw(mounts)).split(" ")
    i = draw(st.integers(0, len(fields) - 1))
    how = draw(st.sampled_from(["drop", "double", "replace", "cut", "splice"]))
    if how == "drop":
        del fields[i]
    elif how == "double":
        fields.insert(i, fields[i])
    elif how == "replace":
        fields[i] = draw(st.sampled_from(["", "-", "x", "1:2", "shared:", "master:x",
                                          "shared:1:2", "99999999999999999999", "-1", "٣"])
                         | piece.filter(lambda p: "\n" not in p))
    elif how == "cut":
        fields = fields[:i]
    else:
        fields[i] = fields[i] + draw(st.sampled_from([" ", " - ", ":", "\\", "\\0"]))
    return " ".join(fields)


any_line = st.one_of(damaged_lines(), st.text(st.characters(exclude_characters="\n")),
                     undecodable.map(lambda t: t.replace("\n", "")))


@budget(150)
@given(any_line)
def test_parse_line_returns_a_mount_or_raises_parse_error(line):
    # Kept behaviour (tests/test_mountinfo.py): a bad line is a ParseError, a ValueError,
    # never skipped; a table with one bad line is not a table we can trust.
    try:
        m = parse_line(line)
    except ParseError as err:
        assert repr(line) in str(err)
        return
    # What parses once is a fixed point: writing it and reading it back changes nothing.
    assert parse_line(format_line(m)) == m


@budget(50)
@given(st.lists(any_line | mounts.map(format_line), max_size=5).map("\n".join)
       | st.text() | undecodable)
def test_parse_returns_mounts_or_raises_parse_error(text):
    try:
        table = parse(text)
    except ParseError:
        return
    # one Mount per line that is not blank: none skipped, none split
    assert len(table) == sum(1 for line in text.split("\n") if line.strip())


# ============================================================================ guest names
VALID_NAME = st.from_regex(NAME_RE, fullmatch=True)
# Ways a name could harm a path or a command line: leave its directory (/, ..), end a C
# string (NUL), split a line or a word (newline, CR, tab, space), hide as a dot file
# (STATE/.nursery is ours), pass for an option (leading dash), or overflow a component.
# Anywhere in a name:
HARMFUL = ["/", "\0", "\n", "\r", "\t", " "]


@st.composite
def harmful_names(draw) -> str:
    """A valid name made harmful in one way."""
    name = draw(VALID_NAME)
    how = draw(st.sampled_from(["insert", "dot", "dash", "long", "exact"]))
    if how == "insert":
        i = draw(st.integers(0, len(name)))
        return name[:i] + draw(st.sampled_from(HARMFUL)) + name[i:]
    if how == "dot":
        return "." + name
    if how == "dash":
        return "-" + name
    if how == "long":
        return (name * 64)[:draw(st.integers(64, 300))]
    return draw(st.sampled_from(["", ".", "..", "/", "-", "--", "../host", "a/..", "\0",
                                 "...", ".nursery"]))


names = st.one_of(VALID_NAME, harmful_names(), st.text(max_size=70), undecodable,
                  st.sampled_from(sorted(RESERVED_NAMES) + ["HOST", "host.", "hosts", "0..",
                                                            "a" * 63, "a" * 64, "é", "c1;rm"]))


@budget(150)
@given(names)
def test_a_name_is_accepted_exactly_when_the_rule_says(name):
    """NAME_RE, fully matched, and not reserved; otherwise a one-line UsageError (exit 2)."""
    should = bool(NAME_RE.fullmatch(name)) and name not in RESERVED_NAMES
    try:
        got = validate_name(name)
    except UsageError as err:
        assert not should, err
        assert err.exit_code == EXIT_USAGE and one_line(str(err))
    else:
        assert should and got == name
    assert is_valid_name(name) is should


@budget(100)
@given(harmful_names())
def test_a_name_that_could_harm_a_path_is_refused(name):
    with pytest.raises(UsageError):
        validate_name(name)


@budget(100)
@given(names, st.sampled_from([Layout(), Layout("/srv/base/", "/run/x/")]))
def test_an_accepted_name_is_one_plain_component_under_base_and_state(name, layout):
    """Checked without NAME_RE, so that loosening it cannot quietly let harm back in."""
    if not is_valid_name(name):
        return
    assert name.isascii() and name.isprintable() and " " not in name
    assert "/" not in name and name not in (".", "..") and name[0] not in ".-"
    assert 1 <= len(name.encode()) <= 63        # well inside NAME_MAX (255)
    for top, path in ((layout.base, layout.mirror(name)), (layout.state, layout.guest_dir(name))):
        assert posixpath.normpath(path) == path
        assert posixpath.dirname(path) == posixpath.normpath(top)
    assert layout.guest_dir(name) != layout.nursery_dir


def test_the_reserved_name_is_a_usage_error_on_the_command_line(tmp_path):
    r = CliRunner().invoke(app, ["--base", str(tmp_path / "b"), "--state", str(tmp_path / "s"),
                                 "create", "host"])
    assert r.exit_code == EXIT_USAGE and "reserved" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ============================================================================ other validators
def as_shown(word: str) -> str:
    """How an error message shows a word a user wrote: as typed, or as its repr when empty
    or unprintable (the rule of model.printable)."""
    return word if word and word.isprintable() else repr(word)


KIND_WORDS = st.one_of(st.sampled_from(EXTRA_KINDS + ("mnt",)),
                       st.sampled_from(["user", "time", "UTS", "Net", "mount", "ns", "net\n"]),
                       st.text(max_size=8), undecodable)


@budget(100)
@given(st.lists(KIND_WORDS.filter(lambda w: "," not in w), max_size=6),
       st.sampled_from(["", " ", "\t", "  "]))
def test_kinds_accepted_exactly_when_every_word_is_a_kind(words, pad):
    """--ns: comma-separated words, blanks around them ignored; mnt is implied and dropped;
    an unknown word is a one-line UsageError naming it."""
    spec = ",".join(pad + w + pad for w in words)
    named = {w.strip() for w in words} - {""}
    unknown = named - set(EXTRA_KINDS) - {"mnt"}
    try:
        got = parse_kinds(spec)
    except UsageError as err:
        assert unknown and one_line(str(err))
        assert all(as_shown(w) in str(err) for w in unknown)
    else:
        assert not unknown and got == named - {"mnt"}


@budget(60)
@given(st.lists(KIND_WORDS, max_size=6) | st.none() | st.integers() | st.floats())
def test_kinds_from_a_recipe_list_or_anything_else(kinds):
    try:
        got = validate_kinds(kinds)
    except UsageError as err:
        assert one_line(str(err))
        assert not isinstance(kinds, list) or set(kinds) - set(EXTRA_KINDS) - {"mnt"}
    else:
        assert isinstance(kinds, list) and got == set(kinds) - {"mnt"}
        assert got <= set(EXTRA_KINDS)


@budget(100)
@given(st.none() | st.sampled_from(PROPAGATION_MODES) | st.text(max_size=12) | undecodable
       | st.sampled_from(["Mirror", "mirror ", "mirror+", "mirror+host\n", "rshared", "host"]))
def test_propagation_accepted_exactly_when_it_is_a_mode(mode):
    try:
        got = validate_propagation(mode)
    except UsageError as err:
        assert mode is not None and mode not in PROPAGATION_MODES
        assert one_line(str(err)) and "propagation" in str(err)
    else:
        assert got == (DEFAULT_PROPAGATION if mode is None else mode)
        assert got in PROPAGATION_MODES


# RFC 1123 section 2.1 (RFC 952 relaxed to allow a leading digit): dot-separated labels of
# letters, digits and hyphens, 1-63 long, not starting or ending with a hyphen. The kernel
# takes at most 64 bytes (__NEW_UTS_LEN, include/uapi/linux/utsname.h).
def rfc1123_hostname(h: str) -> bool:
    if not 1 <= len(h.encode("utf-8", "surrogatepass")) <= 64:
        return False
    return all(0 < len(label) <= 63 and label.isascii()
               and all(c.isalnum() or c == "-" for c in label)
               and not label.startswith("-") and not label.endswith("-")
               for label in h.split("."))


LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
GOOD_HOSTNAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@st.composite
def near_hostnames(draw) -> str:
    """A good hostname with a character put in or at an edge, or one near the length
    limits; valid or not, rfc1123_hostname decides."""
    h = draw(GOOD_HOSTNAME)
    how = draw(st.sampled_from(["insert", "edge", "length", "label"]))
    if how == "insert":
        i = draw(st.integers(0, len(h)))
        return h[:i] + draw(st.sampled_from(["\0", "\n", " ", "_", "/", "..", "é", "\udcff",
                                             "\t", "-", "."])) + h[i:]
    if how == "edge":
        return draw(st.sampled_from(["-", ".", "-."])) + h if draw(st.booleans()) \
            else h + draw(st.sampled_from(["-", ".", ".-"]))
    if how == "length":
        return ("a" * 70 + "." + h)[-draw(st.integers(60, 70)):].lstrip(".")
    return "a" * draw(st.integers(62, 65)) + "." + h


@budget(120)
@given(st.none() | GOOD_HOSTNAME | near_hostnames() | st.text(max_size=70) | undecodable)
def test_hostname_accepted_exactly_by_rfc1123_within_64_bytes(hostname):
    try:
        got = validate_hostname(hostname)
    except UsageError as err:
        assert hostname is not None and not rfc1123_hostname(hostname), err
        assert one_line(str(err)) and "hostname" in str(err)
    else:
        assert got == hostname
        assert hostname is None or rfc1123_hostname(hostname)


@pytest.mark.parametrize("flag,value", [("--hostname", "\udcff"), ("--hostname", "a\nb"),
                                        ("--ns", "uts,a\nb"), ("--ns", "\udcff")])
def test_odd_bytes_in_flags_are_one_line_usage_errors(tmp_path, flag, value):
    # "\udcff" is how Python hands over a byte of argv that is not UTF-8.
    r = CliRunner().invoke(app, ["--base", str(tmp_path / "b"), "--state", str(tmp_path / "s"),
                                 "create", "c1", "--dry-run", flag, value])
    assert r.exit_code == EXIT_USAGE, r.exception
    assert r.stderr.startswith("mirrormount: ") and r.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# ============================================================================ recipes
def toml_string(s: str) -> str:
    """A TOML basic string: quote and backslash escaped, and every control character but
    tab as \\uXXXX (TOML 1.0, "String")."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif (c < " " and c != "\t") or c == "\x7f":
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)                   # finite floats only: repr is valid TOML for those
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_doc(doc: dict) -> str:
    """A recipe as a user writes it: plain keys first, then [table]s and [[array]]s of
    tables; anything deeper inline. Every key is quoted, so any string can be one."""
    def pairs(table: dict) -> str:
        return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in table.items())

    def is_tables(v: object) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    plain = {k: v for k, v in doc.items() if not isinstance(v, dict) and not is_tables(v)}
    text = pairs(plain)
    for k, v in doc.items():
        if isinstance(v, dict):
            text += f"[{toml_string(k)}]\n" + pairs(v)
        elif is_tables(v):
            text += "".join(f"[[{toml_string(k)}]]\n" + pairs(t) for t in v)
    return text


any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)   # NUL included
keys = st.one_of(any_text, st.sampled_from(sorted(GUEST_KEYS | MOUNT_KEYS | {"guest", "mount"})
                                           + ["Guest", "mounts", "hostnme", "src", "nsenter"]))
toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
              st.floats(allow_nan=False, allow_infinity=False), any_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8)

# What a valid recipe may hold (recipe.py's docstring and model.py's rules).
plain_text = st.text(typed, max_size=16)                                   # no NUL
guest_tables = st.fixed_dictionaries({}, optional={
    "rootfs": plain_text, "hostname": GOOD_HOSTNAME,
    "namespaces": st.lists(st.sampled_from(EXTRA_KINDS + ("mnt",)), max_size=4),
    "propagation": st.sampled_from(PROPAGATION_MODES)})
_mount_common = {"source": st.text(typed, min_size=1, max_size=16),
                 "target": plain_text.map(lambda t: "/" + t)}
# -o text a recipe may carry (mountopts.py): per-mount words for any mount; a filesystem's
# own options (judged by the kernel when mounting) only with a type. Arbitrary -o text is
# the mount-options properties' business (tests/test_mountopts.py).
PER_MOUNT = ["ro", "rw", "nosuid", "nodev", "noexec", "noatime", "relatime", "nosymfollow"]
FS_DATA = ["size=1m", "mode=0755", "nr_inodes=100", "uid=0"]
bind_options = st.lists(st.sampled_from(PER_MOUNT), max_size=4).map(",".join)
fs_options = st.lists(st.sampled_from(PER_MOUNT + FS_DATA), max_size=4).map(",".join)
mount_tables = st.one_of(
    st.fixed_dictionaries({**_mount_common, "type": plain_text},
                          optional={"options": fs_options, "guest_only": st.booleans(),
                                    "bind": st.just(False)}),
    st.fixed_dictionaries({**_mount_common, "bind": st.just(True)},
                          optional={"options": bind_options, "guest_only": st.booleans()}))
valid_recipes = st.fixed_dictionaries({}, optional={
    "guest": guest_tables, "mount": st.lists(mount_tables, max_size=3)})


def expected_recipe(doc: dict) -> Recipe:
    g = doc.get("guest", {})
    return Recipe(
        rootfs=g.get("rootfs") or "/", hostname=g.get("hostname"),
        kinds=frozenset(g.get("namespaces", [])) - {"mnt"},
        propagation=g.get("propagation", DEFAULT_PROPAGATION),
        mounts=tuple(RecipeMount(m["source"], m["target"], m.get("type"), m.get("options"),
                                 m.get("bind", False), m.get("guest_only", False))
                     for m in doc.get("mount", [])))


@budget(40)
@given(st.dictionaries(keys, toml_values, max_size=4)
       | st.dictionaries(keys, st.dictionaries(keys, toml_values, max_size=3), max_size=3))
def test_the_toml_writer_is_faithful(doc):
    """The recipe properties below trust toml_doc: what it writes, tomllib reads back."""
    assert tomllib.loads(toml_doc(doc)) == doc


@budget(60)
@given(valid_recipes)
def test_a_valid_recipe_parses_to_what_it_says(doc):
    recipe = parse_recipe(toml_doc(doc))
    assert recipe == expected_recipe(doc)
    g = doc.get("guest", {})
    assert recipe.request("c1") == CreateRequest(
        "c1", g.get("rootfs") or "/", g.get("hostname"),
        frozenset(g.get("namespaces", [])) - {"mnt"}, g.get("propagation", "mirror"))


NOT_STRING = st.one_of(st.booleans(), st.integers(), st.lists(st.just("x"), max_size=2),
                       st.dictionaries(st.just("a"), st.just(1)))
NOT_BOOL = st.one_of(st.integers(), any_text, st.lists(st.booleans(), max_size=2))


@st.composite
def recipes_with_one_mistake(draw) -> tuple[dict, str]:
    """A valid recipe spoiled in one way, and the key the error must name."""
    doc = draw(valid_recipes)
    guest = doc.setdefault("guest", {})
    mounts = doc.setdefault("mount", [])
    if not mounts:
        mounts.append(draw(mount_tables))
    m = mounts[draw(st.integers(0, len(mounts) - 1))]
    mistake = draw(st.sampled_from([
        "unknown", "guest unknown", "mount unknown", "guest not string", "namespaces type",
        "namespaces kind", "propagation", "hostname", "nul", "source", "target",
        "relative target", "type and bind", "neither", "not bool", "not string in mount",
        "guest not table", "mount not list", "mount not table"]))
    if mistake == "unknown":
        key = draw(keys.filter(lambda k: k not in ("guest", "mount")))
        doc[key] = draw(toml_values)
    elif mistake == "guest unknown":
        key = draw(keys.filter(lambda k: k not in GUEST_KEYS))
        guest[key] = draw(toml_values)
    elif mistake == "mount unknown":
        key = draw(keys.filter(lambda k: k not in MOUNT_KEYS))
        m[key] = draw(toml_values)
    elif mistake == "guest not string":
        key = draw(st.sampled_from(["rootfs", "hostname", "propagation"]))
        guest[key] = draw(NOT_STRING)
    elif mistake == "namespaces type":
        key = "namespaces"
        guest[key] = draw(st.one_of(any_text, st.integers(), st.lists(st.integers(), min_size=1),
                                    st.just(["pid", 1])))
    elif mistake == "namespaces kind":
        key = "namespaces"
        guest[key] = draw(st.lists(st.sampled_from(EXTRA_KINDS), max_size=2)) + [
            draw(any_text.filter(lambda k: k not in EXTRA_KINDS + ("mnt",)))]
    elif mistake == "propagation":
        key = "propagation"
        guest[key] = draw(any_text.filter(lambda p: p not in PROPAGATION_MODES))
    elif mistake == "hostname":
        key = "hostname"
        guest[key] = draw(near_hostnames().filter(lambda h: not rfc1123_hostname(h)))
    elif mistake == "nul":
        table, key = draw(st.sampled_from([(guest, "rootfs"), (m, "source"), (m, "target"),
                                           (m, "options")] + ([(m, "type")] * ("type" in m))))
        value = table.get(key) or "/x"
        i = draw(st.integers(0, len(value)))
        table[key] = value[:i] + "\0" + value[i:]
    elif mistake in ("source", "target"):
        key = mistake
        if draw(st.booleans()):
            del m[key]
        else:
            m[key] = ""
    elif mistake == "relative target":
        key = "target"
        m[key] = draw(st.text(typed, min_size=1).filter(lambda t: not t.startswith("/")))
    elif mistake == "type and bind":
        key = "type"
        m.update(type=draw(plain_text), bind=True)
    elif mistake == "neither":
        key = "type"
        m.pop("type", None)
        m.pop("bind", None) if draw(st.booleans()) else m.update(bind=False)
    elif mistake == "not bool":
        key = draw(st.sampled_from(["bind", "guest_only"]))
        m[key] = draw(NOT_BOOL)
    elif mistake == "not string in mount":
        key = draw(st.sampled_from(["source", "target", "options"] + ["type"] * ("type" in m)))
        m[key] = draw(NOT_STRING)
    elif mistake == "guest not table":
        key = "guest"
        doc[key] = draw(st.one_of(any_text, st.integers(), st.lists(st.integers(), max_size=2)))
    elif mistake == "mount not list":
        key = "mount"
        doc[key] = draw(st.one_of(any_text, st.integers(), st.just({"source": "s"})))
    else:
        key = "mount"
        mounts.insert(draw(st.integers(0, len(mounts))), draw(st.one_of(any_text, st.integers())))
    return doc, key


@budget(150)
@given(recipes_with_one_mistake())
def test_a_recipe_with_one_mistake_is_refused_naming_the_key(case):
    doc, key = case
    with pytest.raises(UsageError) as err:
        parse_recipe(toml_doc(doc))
    message = str(err.value)
    assert err.value.exit_code == EXIT_USAGE
    assert one_line(message), message
    assert as_shown(key) in message, (key, message)


guest_like = st.dictionaries(st.sampled_from(sorted(GUEST_KEYS)) | keys, st.one_of(
    toml_values, st.sampled_from(PROPAGATION_MODES), GOOD_HOSTNAME,
    st.lists(st.sampled_from(EXTRA_KINDS + ("mnt", "user")), max_size=3)), max_size=5)
mount_like = st.dictionaries(st.sampled_from(sorted(MOUNT_KEYS)) | keys, st.one_of(
    toml_values, plain_text.map(lambda t: "/" + t), st.booleans()), max_size=7)
any_recipe = st.dictionaries(st.sampled_from(["guest", "mount"]) | keys, st.one_of(
    toml_values, guest_like, st.lists(mount_like | toml_values, max_size=3)), max_size=3)


@budget(60)
@given(any_recipe)
def test_any_recipe_is_a_recipe_or_one_usage_error(doc):
    try:
        r = parse_recipe(toml_doc(doc))
    except UsageError as err:
        assert one_line(str(err)), str(err)
        return
    # what is accepted holds only what model.py and the docstring allow
    assert set(doc) <= {"guest", "mount"}
    assert r.kinds <= set(EXTRA_KINDS) and r.propagation in PROPAGATION_MODES
    assert r.hostname is None or rfc1123_hostname(r.hostname)
    for m in r.mounts:
        assert m.source and m.target.startswith("/") and m.bind == (m.fstype is None)
    strings = [r.rootfs, r.hostname or ""] + [s or "" for m in r.mounts
                                             for s in (m.source, m.target, m.fstype, m.options)]
    assert not any("\0" in s for s in strings)


@budget(100)
@given(st.text(max_size=200) | st.lists(st.sampled_from(
    ["[guest]", "[[mount]]", "[mount]", "namespaces = ", "[", "]", "{", "}", "\n", "'x'",
     '"', "=", "guest.rootfs = '/'", "mount = 3", "1", "true", ",", "\\u0000"]),
    max_size=30).map("".join))
def test_any_text_is_a_recipe_or_one_usage_error(text):
    try:
        parse_recipe(text)
    except UsageError as err:
        assert one_line(str(err)), str(err)


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000,
                                  "a = " + "{b = " * 5000 + "1" + "}" * 5000])
def test_a_recipe_nested_too_deep_is_a_usage_error(text):
    with pytest.raises(UsageError, match="recipe"):
        parse_recipe(text)


@budget(30)
@given(st.binary(max_size=64) | valid_recipes.map(lambda d: toml_doc(d).encode()))
def test_a_recipe_file_of_any_bytes_is_a_recipe_or_one_usage_error(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "recipe.toml"
    path.write_bytes(data)
    try:
        load_recipe(str(path))
    except UsageError as err:
        assert one_line(str(err)) and str(path) in str(err)
