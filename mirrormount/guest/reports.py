"""What the library returns: frozen results that the CLI renders as a table or as JSON
(every JSON key, once published, stays). Pure: no I/O.
"""
from __future__ import annotations


from ..record import field, record
from .health import Health


@record(frozen=True)
class GuestInfo:
    """One guest as list and status show it."""

    name: str
    mirror: str
    rootfs: str
    state: str                       # running | stopped | broken
    namespaces: dict[str, str]       # kind -> "mnt:[inode]"
    pids: list[int]
    propagation: str = "mirror"
    hostname: str | None = None
    guest_only: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    confine: str = "none"
    drop_caps: list[str] = field(default_factory=list)
    # the lifecycle: the init's argv ([] for init-less), the namespaces shared with other
    # guests ({kind: guest} this one joined) and the guests that joined this one's
    init: list[str] = field(default_factory=list)
    joins: dict[str, str] = field(default_factory=dict)
    joined_by: dict[str, list[str]] = field(default_factory=dict)   # guest -> kinds

    def to_json(self) -> dict:
        return {"name": self.name, "mirror": self.mirror, "rootfs": self.rootfs,
                "state": self.state, "namespaces": self.namespaces, "pids": self.pids,
                "propagation": self.propagation, "hostname": self.hostname,
                "guest_only": self.guest_only, "problems": self.problems,
                "confine": self.confine, "drop_caps": self.drop_caps,
                "init": self.init, "joins": self.joins, "joined_by": self.joined_by}


@record(frozen=True)
class MountResult:
    """What `mount` did: TARGET as typed and as the kernel resolved it inside the guest."""

    name: str
    source: str
    typed: str
    target: str
    guest_only: bool = False
    options: str = ""

    @property
    def redirected(self) -> bool:
        """Whether a symlink in the guest led TARGET somewhere else than it reads."""
        from .mountops import typed_path
        return self.target != typed_path(self.typed)

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "target": self.target,
                "typed": self.typed, "guest_only": self.guest_only, "options": self.options}


@record(frozen=True)
class StatusReport:
    """status NAME: the guest, its mirror's health and the problems found."""

    name: str
    mirror: str
    health: Health
    info: GuestInfo

    @property
    def problems(self) -> list[str]:
        """The mirror's problems, then the guest's own (held namespaces, its init, an
        interrupted guest-only mount); the mirror's absence is said once, by the first."""
        return [*self.health.problems,
                *(p for p in self.info.problems if not p.startswith("mirror "))]

    @property
    def ok(self) -> bool:
        return self.health.mirror_intact and self.info.state != "broken"

    def to_json(self) -> dict:
        return {"name": self.name, "mirror": self.mirror,
                "mirror_intact": self.health.mirror_intact,
                "mounts_host": self.health.mounts_host, "mounts_guest": self.health.mounts_guest,
                "problems": self.problems, "state": self.info.state,
                "propagation": self.info.propagation, "guest_only": self.info.guest_only,
                "confine": self.info.confine, "drop_caps": self.info.drop_caps,
                "init": self.info.init, "joins": self.info.joins,
                "joined_by": self.info.joined_by}


@record(frozen=True)
class RepairReport:
    """What `repair` did (or, with dry_run, would do), and the status afterwards."""

    name: str
    steps: list[str]                 # each step's why, in order
    cannot: list[str]                # what repair could not heal, each with why
    left: list[str]                  # left as it is on purpose (harmless, unreachable)
    status: StatusReport | None      # after the run; None for a dry run
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status.ok

    def to_json(self) -> dict:
        return {"name": self.name, "dry_run": self.dry_run, "steps": self.steps,
                "cannot": self.cannot, "left": self.left,
                "mirror_intact": self.status.health.mirror_intact if self.status else None,
                "problems": self.status.problems if self.status else None}
