"""Records: classes of named fields, declared as with the standard library's dataclasses,
without compiling code for each class.

Why not ``dataclasses``: every command starts a fresh interpreter, and a guest's create
takes about 5 ms, while importing ``dataclasses`` takes about 17 ms (it imports inspect,
which imports ast, dis and tokenize) and building each class about 0.8 ms more (it writes
``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and ``__setattr__`` as source text and
compiles them with exec). A plain CLI create built 23 such classes: 36 ms of its ~96 ms
(bench/results/create.md, "Where the time goes"). Here a class's fields are read once from
its annotations, and methods shared by every record do the work at call time: importing
this module and building all the package's records takes under 2 ms.

What a record keeps from dataclasses (the subset this package uses, same semantics):
``@record``, ``@record(frozen=True)``, ``@record(frozen=True, eq=False)``; ``field(default=,
default_factory=, repr=, compare=, hash=)``; ``fields()``, ``replace()`` (which runs
``__init__`` and so ``__post_init__`` again), ``asdict()``; ``__match_args__``; the hash
rules of dataclasses' table (frozen with eq: a hash of the compared fields; eq without
frozen: unhashable; eq=False: identity); a method written in the class body wins; a
mutable default (list, dict, set) and a field without a default after one with a default
are refused when the class is built (TypeError/ValueError, as dataclasses raises them).
Not kept: ``order``, ``slots``, ``kw_only``, ``InitVar``, ``unsafe_hash``; ClassVar
annotations are skipped, as there.

Static checkers see ``record`` as a dataclass transform (PEP 681), so mypy checks the
generated ``__init__`` as it does a dataclass's.
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar, dataclass_transform
    T = TypeVar("T")
else:
    def dataclass_transform(**_kwargs):
        return lambda function: function


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_FIELDS = "__record_fields__"


class FrozenInstanceError(AttributeError):
    """Assigning to (or deleting) a field of a frozen record."""


class Field:
    """One field of a record: its name, default or default factory, and whether it takes
    part in repr, in comparison and in the hash (hash None: as compare)."""

    __slots__ = ("name", "default", "default_factory", "repr", "compare", "hash")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING,
                 repr: bool = True, compare: bool = True, hash: bool | None = None) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare
        self.hash = hash

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, compare={self.compare!r})")


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          repr: bool = True, compare: bool = True, hash: bool | None = None) -> Any:
    """A field's options, as dataclasses.field: ``default`` or ``default_factory`` (called
    once per instance), and whether it shows in repr, takes part in ==, and in the hash."""
    return Field(default, default_factory, repr, compare, hash)


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *, frozen: bool = False, eq: bool = True) -> Any:
    """Make ``cls`` a record, in place, and return it; or, called with options only, a
    decorator that does. ``frozen``: assigning to a field raises FrozenInstanceError.
    ``eq``: == compares the fields (with the same class only); False keeps identity.
    Raises TypeError (a field without default after one with) and ValueError (a mutable
    default) when the class is built."""
    def wrap(klass: type[T]) -> type[T]:
        return _build(klass, frozen, eq)
    return wrap if cls is None else wrap(cls)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and text.strip("'\"").startswith(("ClassVar",
                                                                   "typing.ClassVar"))


def _build(cls: type[T], frozen: bool, eq: bool) -> type[T]:
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        found.update((f.name, f) for f in base.__dict__.get(_FIELDS, ()))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)            # a factory's (or no) default: none on the class
            else:
                setattr(cls, name, f.default)
        if isinstance(f.default, (list, dict, set)):
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not "
                             "allowed: use default_factory")
        found.pop(name, None)                 # a redefined field moves to the end, as there
        found[name] = f
    flds = tuple(found.values())
    seen_default = False
    for f in flds:
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default
    setattr(cls, _FIELDS, flds)
    own = cls.__dict__
    _add(cls, "__init__", _make_init(cls, flds))
    _add(cls, "__repr__", _make_repr(tuple(f.name for f in flds if f.repr)))
    _add(cls, "__match_args__", tuple(f.name for f in flds))
    if eq:
        _add(cls, "__eq__", _make_eq(tuple(f.name for f in flds if f.compare)))
        # dataclasses' hash table: a __hash__ written in the body is kept; a class body
        # that defines __eq__ alone has __hash__ = None put there by Python, which is no
        # explicit hash.
        explicit = own.get("__hash__", MISSING)
        if explicit is MISSING or (explicit is None and "__eq__" in own):
            hashed = tuple(f.name for f in flds if (f.compare if f.hash is None else f.hash))
            setattr(cls, "__hash__", _make_hash(hashed) if frozen else None)
    if frozen:
        for name in ("__setattr__", "__delattr__"):
            if name in own:
                raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
        names = frozenset(f.name for f in flds)
        setattr(cls, "__setattr__", _make_frozen_setattr(cls, names))
        setattr(cls, "__delattr__", _make_frozen_delattr(cls, names))
    return cls


def _add(cls: type, name: str, value: object) -> None:
    if name not in cls.__dict__:              # what the class body wrote wins
        setattr(cls, name, value)


def _make_init(cls: type, flds: tuple[Field, ...]) -> Callable[..., None]:
    qual = cls.__qualname__
    names = tuple(f.name for f in flds)
    known = frozenset(names)
    plain = {f.name: f.default for f in flds if f.default is not MISSING}
    factories = tuple((f.name, f.default_factory) for f in flds
                      if f.default_factory is not MISSING)
    required = tuple(f.name for f in flds
                     if f.default is MISSING and f.default_factory is MISSING)
    post = hasattr(cls, "__post_init__")
    n = len(names)
    # Python's own wording for a function's arguments (with self counted, as there).
    takes = (f"{n + 1} positional argument{'s' if n else ''}" if len(required) == n
             else f"from {len(required) + 1} to {n + 1} positional arguments")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        d = self.__dict__                     # no __setattr__: frozen records too
        fresh = not d
        if len(args) > n:
            raise TypeError(f"{qual}.__init__() takes {takes} but {len(args) + 1} "
                            f"{'was' if len(args) == 0 else 'were'} given")
        if plain:
            d.update(plain)
        if args:
            d.update(zip(names, args))
        if kwargs:
            if not known.issuperset(kwargs):
                key = next(k for k in kwargs if k not in known)
                raise TypeError(f"{qual}.__init__() got an unexpected keyword "
                                f"argument {key!r}")
            if args:
                for key in names[:len(args)]:
                    if key in kwargs:
                        raise TypeError(f"{qual}.__init__() got multiple values for "
                                        f"argument {key!r}")
            d.update(kwargs)
        for key, factory in factories:
            if key not in d:
                d[key] = factory()
        # Every key now in d is a field: a fresh instance with n keys has them all.
        if not (fresh and len(d) == n) and not known <= d.keys():
            missing = [key for key in required if key not in d]
            quoted = [repr(k) for k in missing]
            listed = (" and ".join(quoted) if len(quoted) < 3
                      else ", ".join(quoted[:-1]) + ", and " + quoted[-1])
            raise TypeError(f"{qual}.__init__() missing {len(missing)} required positional "
                            f"argument{'s' if len(missing) > 1 else ''}: {listed}")
        if post:
            self.__post_init__()

    __init__.__qualname__ = f"{qual}.__init__"
    return __init__


def _make_repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        return f"{self.__class__.__qualname__}({inner})"
    return __repr__


def _make_eq(names: tuple[str, ...]) -> Callable[[Any, object], Any]:
    def __eq__(self: Any, other: object) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in names)
    return __eq__


def _make_hash(names: tuple[str, ...]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, k) for k in names))
    return __hash__


def _make_frozen_setattr(cls: type[Any], names: frozenset[str]) -> Callable[[Any, str, Any], None]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)
    return __setattr__


def _make_frozen_delattr(cls: type[Any], names: frozenset[str]) -> Callable[[Any, str], None]:
    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)
    return __delattr__


def is_record(obj: object) -> bool:
    """True for a record class or an instance of one."""
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def fields(obj: object) -> tuple[Field, ...]:
    """A record's (or record class's) fields, in order. TypeError for anything else."""
    try:
        return getattr(obj, _FIELDS)
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def replace(obj: T, /, **changes: Any) -> T:
    """A new record like ``obj`` with ``changes``; built by ``__init__``, so checks made in
    ``__post_init__`` run again. TypeError for an unknown field."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in changes}
    return obj.__class__(**values, **changes)


def asdict(obj: Any) -> dict[str, Any]:
    """A record as a dict of its fields, recursively (records, lists, tuples and dicts
    inside are converted or copied), as dataclasses.asdict."""
    return _asdict(obj)


def _asdict(value: Any) -> Any:
    if is_record(value) and not isinstance(value, type):
        return {f.name: _asdict(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return type(value)(_asdict(v) for v in value)
    if isinstance(value, dict):
        return type(value)((_asdict(k), _asdict(v)) for k, v in value.items())
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    import copy
    return copy.deepcopy(value)
