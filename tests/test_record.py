"""mirrormount.record against the standard library's dataclasses: the same classes, built
both ways, must behave alike in everything the package uses (construction, defaults,
errors, repr, ==, hash, frozen, replace, fields, asdict, pickle, match), and building one
must not compile code."""
from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from typing import ClassVar

import pytest

from mirrormount import record as rec


def both(body: str, frozen: bool = False, eq: bool = True) -> tuple[type, type]:
    """The class `body` declares (named C), built by dataclasses and by record."""
    made = []
    for deco, fld in ((dataclasses.dataclass, dataclasses.field), (rec.record, rec.field)):
        ns: dict = {"field": fld}
        exec(f"class C:\n{body}", ns)
        made.append(deco(frozen=frozen, eq=eq)(ns["C"]))
    return made[0], made[1]


BODY = """
    '''doc'''
    a: int
    b: str = "x"
    c: list = field(default_factory=list)
    d: dict = field(default_factory=dict, compare=False)
    e: int = field(default=3, repr=False)
"""


def outcome(call):
    try:
        return ("ok", repr(call()))
    except Exception as exc:     # noqa: BLE001 - comparing what each raises
        return (type(exc).__name__, str(exc))


CALLS = [
    ((1,), {}), ((1, "y"), {}), ((), {"a": 2, "b": "z"}), ((1, "y", [1], {}, 9), {}),
    ((), {}), ((1,), {"a": 2}), ((1,), {"zz": 1}), ((1, 2, 3, 4, 5, 6), {}),
    ((), {"b": "q"}), ((), {"b": "q", "c": []}),
]


@pytest.mark.parametrize("args,kwargs", CALLS)
@pytest.mark.parametrize("frozen", [False, True])
def test_construction_and_its_errors_match_dataclasses(args, kwargs, frozen):
    std, mine = both(BODY, frozen=frozen)
    assert outcome(lambda: mine(*args, **kwargs)) == outcome(lambda: std(*args, **kwargs))


@pytest.mark.parametrize("frozen,eq", [(False, True), (True, True), (True, False),
                                       (False, False)])
def test_equality_and_hash_follow_dataclasses_table(frozen, eq):
    std, mine = both(BODY, frozen=frozen, eq=eq)
    x, y = mine(1, d={"k": 1}), mine(1, d={"k": 2})
    sx, sy = std(1, d={"k": 1}), std(1, d={"k": 2})
    assert (x == y) == (sx == sy)          # d is compare=False
    assert (x == mine(2)) == (sx == std(2))
    assert (mine.__hash__ is None) == (std.__hash__ is None)
    if std.__hash__ is not None and frozen and eq:
        x2 = mine(1, c=(), d={})
        assert hash(x2) == hash(mine(1, c=(), d={"other": 1}))
    assert x.__eq__(object()) is (NotImplemented if eq else NotImplemented)


def test_default_factories_are_fresh_per_instance():
    _, mine = both(BODY)
    x, y = mine(1), mine(1)
    x.c.append(1)
    assert y.c == [] and x.c == [1]


def test_frozen_refuses_assignment_and_deletion():
    _, mine = both(BODY, frozen=True)
    x = mine(1)
    with pytest.raises(rec.FrozenInstanceError, match="cannot assign to field 'a'"):
        x.a = 2
    with pytest.raises(AttributeError):
        del x.b
    object.__setattr__(x, "a", 5)          # what a __post_init__ may do, as there
    assert x.a == 5


def test_repr_matches_dataclasses_with_repr_false_hidden():
    std, mine = both(BODY)
    assert repr(mine(1, "y")) == repr(std(1, "y"))
    assert "e=" not in repr(mine(1))


def test_methods_in_the_body_win():
    for deco in (dataclasses.dataclass(frozen=True), rec.record(frozen=True)):
        @deco
        class C:
            a: int

            def __repr__(self) -> str:
                return "mine"

            def __hash__(self) -> int:
                return 7
        assert repr(C(1)) == "mine" and hash(C(1)) == 7


def test_eq_in_body_without_hash_gets_the_generated_hash_when_frozen():
    @rec.record(frozen=True)
    class C:
        a: int

        def __eq__(self, other: object) -> bool:
            return True
    assert C(1) == C(2) and hash(C(1)) == hash((1,))


def test_post_init_runs_on_init_and_on_replace():
    @rec.record(frozen=True)
    class C:
        a: int
        twice: int = 0

        def __post_init__(self) -> None:
            object.__setattr__(self, "twice", self.a * 2)
    c = rec.replace(C(2), a=5)
    assert c.twice == 10 and C(1).twice == 2
    with pytest.raises(TypeError):
        rec.replace(c, nope=1)


def test_inheritance_adds_fields_after_the_base():
    @rec.record(frozen=True)
    class Base:
        a: int
        b: int = 1

    @rec.record(frozen=True)
    class Child(Base):
        c: int = 2
    assert [f.name for f in rec.fields(Child)] == ["a", "b", "c"]
    assert Child(0).c == 2 and Child(0, 5, 6) == Child(a=0, b=5, c=6)
    assert Child.__match_args__ == ("a", "b", "c")


def test_class_building_errors_match_dataclasses():
    for body in ("    a: int = 1\n    b: int\n", "    a: list = []\n"):
        errors = []
        for deco in (dataclasses.dataclass, rec.record):
            ns: dict = {}
            exec(f"class C:\n{body}", ns)
            try:
                deco(ns["C"])
                errors.append(None)
            except Exception as exc:     # noqa: BLE001
                errors.append(type(exc))
        assert errors[0] is not None and errors[0] == errors[1], body
    with pytest.raises(ValueError):
        rec.field(default=1, default_factory=list)


def test_classvar_is_not_a_field():
    @rec.record
    class C:
        a: int
        kinds: ClassVar[tuple[str, ...]] = ("x",)
    assert [f.name for f in rec.fields(C)] == ["a"] and C.kinds == ("x",)


def test_fields_asdict_and_is_record():
    std, mine = both(BODY)
    x = mine(1, c=[mine(2)], d={"k": (mine(3),)})
    assert rec.is_record(x) and rec.is_record(mine) and not rec.is_record(std(1))
    sx = std(1, c=[std(2)], d={"k": (std(3),)})
    assert rec.asdict(x) == dataclasses.asdict(sx)
    assert rec.asdict(x)["c"][0] is not x.c[0]
    with pytest.raises(TypeError):
        rec.fields(object())


@rec.record(frozen=True)
class Pickled:
    a: int
    b: tuple = ()


def test_pickle_and_match():
    p = Pickled(1, (2,))
    assert pickle.loads(pickle.dumps(p)) == p
    match p:
        case Pickled(1, b):
            assert b == (2,)
        case _:
            raise AssertionError("no match")


def test_building_records_compiles_nothing_and_imports_no_dataclasses():
    """No source text is exec'd while the create and busy paths are imported (importlib's
    own exec of each module's code object is not source text)."""
    code = ("import sys, builtins\n"
            "seen = []\n"
            "real = builtins.exec\n"
            "builtins.exec = lambda src, *a: (isinstance(src, str) and seen.append(src),\n"
            "                                 real(src, *a))[1]\n"
            "import mirrormount.guest.guests, mirrormount.busy.finder\n"
            "print(len(seen), 'dataclasses' in sys.modules, 'inspect' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0", "False", "False"]
