"""Pure judgement of a guest's mirror from two mount tables: the host's and the guest's.

The mirror is intact when the host's BASE/NAME and the guest's / are one peer group (so
mounts flow both ways) and, in `mirror` mode, no mount of the mirror is tied to a peer group
the host uses elsewhere (which would leak mounts between the guest and the host at large).
"""
from __future__ import annotations


from ..record import record
from ..kernel.mountinfo import Mount, MountTable, is_under
from .owner import LABELS, made_by_us

RECREATE = "destroy and re-create the guest to rebuild the mirror"


@record(frozen=True)
class Health:
    """The judgement of one mirror: intact or not, mount counts on each side, problems with
    hints."""

    mirror_intact: bool
    mounts_host: int
    mounts_guest: int
    problems: tuple[str, ...]


def guest_to_host(mirror: str, guest_path: str) -> str:
    return mirror if guest_path == "/" else mirror.rstrip("/") + guest_path


def assess(mirror: str, propagation: str, host: MountTable, guest: MountTable | None,
           base: str, guest_only: tuple[str, ...] = ()) -> Health:
    problems: list[str] = []
    fatal = False
    top = host.at(mirror)
    host_mounts = host.under(mirror)
    if top is None:
        problems.append(f"{mirror} is not mounted: the mirror is gone; hint: {RECREATE}")
        fatal = True
    elif top.shared is None:
        problems.append(f"{mirror} is {top.propagation}, not shared: mounts no longer flow "
                        f"between host and guest; hint: {RECREATE}")
        fatal = True
    if propagation == "mirror+host" and top is not None and top.master is None:
        problems.append(f"{mirror} is mirror+host but receives from no host peer group: host "
                        "mounts never arrive; hint: make the host mount that holds the rootfs "
                        f"shared (mount --make-shared), then {RECREATE}")
        fatal = True
    if guest is None:
        problems.append("the guest's mount namespace cannot be read: its nsfs file is missing; "
                        f"hint: {RECREATE}")
        return Health(False, len(host_mounts), 0, tuple(problems))
    groot = guest.root()
    if top is not None and top.shared is not None and groot.shared != top.shared:
        problems.append(
            f"the guest's / is {groot.propagation} and no longer a peer of {mirror} "
            f"(peer group {top.shared}): mounts no longer flow between them; someone changed "
            f"propagation inside the guest (e.g. mount --make-rprivate /); hint: {RECREATE}")
        fatal = True
    if top is not None:
        outside = {m.shared: m for m in host if m.shared is not None
                   and not is_under(m.mountpoint, mirror) and not is_under(m.mountpoint, base)}
        for m in host_mounts:
            # In both modes a *peer* of a host group leaks the guest's mounts into the host.
            if m.shared in outside:
                problems.append(f"{m.mountpoint} shares peer group {m.shared} with host mount "
                                f"{outside[m.shared].mountpoint}: mounts leak both ways; "
                                f"hint: {RECREATE}")
                fatal = True
            # Receiving from the host is what mirror+host asks for; mirror mode forbids it.
            if propagation == "mirror" and m.master in outside:
                problems.append(f"{m.mountpoint} receives mounts from host peer group "
                                f"{m.master} ({outside[m.master].mountpoint}), which mirror "
                                f"mode forbids; hint: {RECREATE}")
                fatal = True
    if not fatal:
        problems.extend(_unmirrored(mirror, host, guest, guest_only))
    return Health(not fatal, len(host_mounts), len(guest), tuple(problems))


def _unmirrored(mirror: str, host: MountTable, guest: MountTable,
                guest_only: tuple[str, ...]) -> list[str]:
    """Guest mounts with no copy on the host side (other than intended guest-only ones, and
    what a mirrormount run inside the guest keeps under its own BASE and STATE: those are
    private by design, so a nested guest's mounts never reach this host)."""
    out = []
    nested = [g.mountpoint for g in guest if g.mountpoint != "/" and
              any(made_by_us(g, what) for what in LABELS)]
    for g in guest:
        if g.mountpoint == "/" or any(is_under(g.mountpoint, p) for p in guest_only):
            continue
        if any(is_under(g.mountpoint, n) and g.mountpoint != n for n in nested):
            continue
        h: Mount | None = host.at(guest_to_host(mirror, g.mountpoint))
        if h is None:
            out.append(f"guest mount {g.mountpoint} has no copy under {mirror}: it was made "
                       "on a private mount in the guest")
    return out[:20]
