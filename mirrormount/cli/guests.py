"""The guest commands: create, list, status, mount, umount, repair, destroy, doctor, demo
(exec and enter: cli/exec.py). Each parses, calls the library (guest/), and renders a table
or JSON; errors become exit codes in common.reports_errors, the one place that does it.
"""
from __future__ import annotations

import shlex
from typing import List, Optional

import typer

from ..errors import EXIT_FAILED, BusyError, OperationError, UsageError
from ..guest import faults
from ..guest.mounting import UmountBusy, require_root
from ..guest.model import (parse_caps, parse_kinds, validate_confine, validate_name,
                           validate_propagation)
from ..guest.recipe import Recipe, RecipeMount, load_recipe
from ..kernel import signals
from .columns import NOHEADINGS_OPT, OUTPUT_OPT, RAW_OPT, SORT_OPT, Column, Columns
from .common import (DRY_RUN, JSON_OPT, NAME_HELP, app, emit_json, reports_errors, settings,
                     seconds, show_plan, want_json)


@app.command()
@reports_errors
def create(
    ctx: typer.Context,
    names: Optional[List[str]] = typer.Argument(
        None, metavar="NAME...", help="Guest name(s) (optional with a recipe that names one)."),
    rootfs: Optional[str] = typer.Option(None, "--rootfs", metavar="DIR",
                                         help="Directory to mirror as the guest's / [/]."),
    hostname: Optional[str] = typer.Option(None, "--hostname", metavar="HOSTNAME",
                                           help="Own UTS namespace with this hostname."),
    ns: Optional[str] = typer.Option(None, "--ns", metavar="KIND[,KIND...]", help="More namespaces: uts,ipc,net,pid,cgroup"),
    propagation: Optional[str] = typer.Option(
        None, "--propagation", metavar="MODE", help="mirror [default], or mirror+host to also receive host mounts."),
    confine: Optional[str] = typer.Option(
        None, "--confine", metavar="mirror|none",
        help="mirror [default]: every process mirrormount starts in the guest runs under a "
             "seccomp filter that keeps it from cutting itself off its mirror; none: no filter."),
    drop_caps: Optional[str] = typer.Option(
        None, "--drop-caps", metavar="CAP[,CAP...]",
        help="Capabilities to drop from the bounding set of everything started in the guest "
             "(e.g. sys_admin: the guest can make no mounts)."),
    init: Optional[str] = typer.Option(
        None, "--init", metavar="CMD",
        help="The guest's PID 1 (one string, split as a shell would), in a pid namespace of "
             "its own with a fresh /proc; started at once."),
    join: Optional[List[str]] = typer.Option(
        None, "--join", metavar="KIND=GUEST",
        help="Share a namespace of another guest (uts, ipc, net, cgroup); repeatable."),
    stop_signal: Optional[str] = typer.Option(
        None, "--stop-signal", metavar="SIG",
        help="What `stop` sends the init (default SIGTERM; e.g. SIGRTMIN+3 for systemd)."),
    start_cmd: Optional[List[str]] = typer.Option(
        None, "--start", metavar="CMD", help="Init-less: a command `start` runs in the "
                                              "guest (sh -c); repeatable."),
    shutdown_cmd: Optional[List[str]] = typer.Option(
        None, "--shutdown", metavar="CMD", help="Init-less: a command `stop` runs in the "
                                                 "guest first (sh -c); repeatable."),
    recipe_file: Optional[str] = typer.Option(None, "--recipe", metavar="FILE",
                                              help="A TOML recipe instead of the flags above "
                                                   "(see recipes/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing "
                                                          "(with -J: the plan as JSON)."),
    json_local: bool = JSON_OPT,
) -> None:
    """Create guests: BASE/NAME mirrors the guest's whole mount tree, both ways."""
    s = settings(ctx)
    names = list(names or [])
    if len(set(names)) != len(names):
        raise UsageError("a name is given twice")
    if recipe_file is not None:
        if any(v is not None for v in (rootfs, hostname, ns, propagation, confine, drop_caps,
                                       init, join, stop_signal, start_cmd, shutdown_cmd)):
            raise UsageError("give either --recipe or --rootfs/--hostname/--ns/--propagation/"
                             "--confine/--drop-caps/--init/--join/--stop-signal/--start/"
                             "--shutdown")
        recipe = load_recipe(recipe_file)
        if not names and recipe.name:
            names = [recipe.name]
    else:
        from ..guest.model import parse_init, parse_joins, parse_signal
        parse_signal(stop_signal)
        if init is not None and (start_cmd or shutdown_cmd):
            raise UsageError("--start and --shutdown are for init-less guests; an init runs "
                             "its own")
        recipe = Recipe(rootfs or "/", hostname, parse_kinds(ns),
                        validate_propagation(propagation), confine=validate_confine(confine),
                        drop_caps=parse_caps(drop_caps), init=parse_init(init),
                        stop_signal=stop_signal, start=tuple(start_cmd or ()),
                        shutdown=tuple(shutdown_cmd or ()), joins=parse_joins(join or ()))
    if not names:
        raise UsageError("create: give a NAME (or a recipe with name = \"...\")")
    # The whole batch is checked before the first change (names, existing guests, BASE and
    # STATE, the plan itself), so exit 2 always means that nothing changed.
    reqs = [s.guests.validate_create(recipe.request(n)) for n in names]
    for req in reqs:
        s.guests.plan(req)
    # The recipe's mounts too, as far as they can be judged before the guest exists.
    s.guests.check_recipe_mounts(recipe.rootfs, recipe.mounts)
    if dry_run and want_json(ctx, json_local):
        from ..guest.ops import ops_json
        emit_json([{"name": req.name, "ops": ops_json(s.guests.plan(req)),
                    "then": [mount_command(req.name, m) for m in recipe.mounts]}
                   for req in reqs])
        return
    if dry_run:
        typer.echo(s.guests.dry_run(reqs), nl=False)
        for n in names:
            for m in recipe.mounts:
                typer.echo(f"# then, from the recipe:\n{mount_command(n, m)}")
        return
    out: list = []
    for req in reqs:
        try:
            # Each guest is a whole: a stop (Ctrl-C, SIGTERM) lands between two steps of its
            # create, which then rolls back, or once it is made, with its recipe's mounts,
            # and reported; never in between.
            with signals.deferred():
                info, outcome = s.guests.create(req)
                if recipe.mounts:
                    try:
                        s.guests.add_mounts(req.name, recipe.mounts)
                    except BaseException as exc:
                        # A recipe is all or nothing: a guest without its mounts is not
                        # what was asked. This undo, too, runs to its end whatever arrives.
                        with signals.shielded():
                            s.guests.destroy(req.name, force=True, grace=0)
                        if isinstance(exc, UsageError):
                            # Exit 2 promises "nothing changed"; here a guest was made and
                            # removed again: an operation that failed.
                            raise OperationError(f"{exc}; guest {req.name} was removed "
                                                 "again") from None
                        raise
                out.append(info)
                if not want_json(ctx, json_local):
                    ns_list = ",".join(info.namespaces)
                    typer.echo(f"created {info.name}: {info.mirror} (namespaces {ns_list})")
                faults.at("reported")
        except BaseException as exc:
            done = [o.name for o in out]
            signals.end_batch("create", exc, done, [r.name for r in reqs if r.name not in done])
    if want_json(ctx, json_local):
        emit_json([i.to_json() for i in out])


def mount_command(name: str, m: RecipeMount) -> str:
    """The `mirrormount mount` line a recipe mount stands for (shown by --dry-run)."""
    words = ["mirrormount", "mount", name, m.source, m.target]
    if m.bind:
        words.append("--bind")
    if m.fstype:
        words += ["-t", m.fstype]
    if m.options:
        words += ["-o", m.options]
    if m.guest_only:
        words.append("--guest-only")
    if m.mkdir:
        words.append("--mkdir")
    return shlex.join(words)


GUESTS = Columns([
    Column("NAME", "the guest's name"),
    Column("STATE", "running, stopped or broken"),
    Column("MIRROR", "the guest's mirror on the host (BASE/NAME)"),
    Column("ROOTFS", "the host directory mirrored as the guest's /"),
    Column("PROPAGATION", "mirror, or mirror+host (also receives host mounts)"),
    Column("NS", "the guest's own namespaces (mnt, uts, ipc, net, pid, cgroup)"),
    Column("PIDS", "processes inside, as the host numbers them"),
    Column("HOSTNAME", "the guest's hostname (own UTS namespace)"),
    Column("CONFINE", "mirror (seccomp filter) or none"),
    Column("DROP_CAPS", "capabilities dropped from the bounding set"),
    Column("GUEST_ONLY", "mounts kept out of the host mirror"),
    Column("PROBLEMS", "what is wrong with the guest, if anything"),
], default=["NAME", "STATE", "MIRROR", "ROOTFS", "PROPAGATION", "NS", "PIDS"])


def guest_row(i) -> dict:
    """One GuestInfo as a row of GUESTS (lists are joined with commas by the renderer)."""
    return {"NAME": i.name, "STATE": i.state, "MIRROR": i.mirror, "ROOTFS": i.rootfs,
            "PROPAGATION": i.propagation, "NS": list(i.namespaces), "PIDS": i.pids,
            "HOSTNAME": i.hostname, "CONFINE": i.confine, "DROP_CAPS": i.drop_caps,
            "GUEST_ONLY": i.guest_only, "PROBLEMS": "; ".join(i.problems)}


@app.command("list", epilog=GUESTS.epilog())
@reports_errors
def list_(ctx: typer.Context, json_local: bool = JSON_OPT, output: Optional[str] = OUTPUT_OPT,
          noheadings: bool = NOHEADINGS_OPT, raw: bool = RAW_OPT,
          sort: Optional[str] = SORT_OPT) -> None:
    """List every guest, its state, namespaces and processes."""
    GUESTS.select(output)                 # bad columns: exit 2 before anything is read
    if sort is not None:
        GUESTS.column(sort, "--sort")
    infos = settings(ctx).guests.list_all()
    if want_json(ctx, json_local):
        emit_json([i.to_json() for i in infos])
        return
    text = GUESTS.render([guest_row(i) for i in infos], output, sort=sort, raw=raw,
                         headings=not noheadings)
    if text:
        typer.echo(text)


@app.command()
@reports_errors
def status(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
           json_local: bool = JSON_OPT) -> None:
    """Health of a guest's mirror: one peer group with the guest, no leaks to the host."""
    rep = settings(ctx).guests.status(name)
    if want_json(ctx, json_local):
        emit_json(rep.to_json())
    else:
        from .statusview import render_status
        typer.echo(render_status(rep))
    if not rep.ok:
        raise typer.Exit(EXIT_FAILED)


# exec and enter: cli/exec.py



@app.command()
@reports_errors
def mount(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
          source: str = typer.Argument(..., help="A device, a filesystem's source, or a "
                                                 "host path (--bind)."),
          target: str = typer.Argument(..., help="A path inside the guest."),
          fstype: Optional[str] = typer.Option(None, "-t", "--type", metavar="FSTYPE",
                                               help="The filesystem type, as mount -t."),
          options: Optional[str] = typer.Option(None, "-o", "--options", metavar="OPTS",
                                                help="Mount options, as mount -o."),
          bind: bool = typer.Option(False, "--bind", help="Bind a host path."),
          guest_only: bool = typer.Option(False, "--guest-only",
                                          help="Keep the mount out of the host mirror."),
          mkdir: bool = typer.Option(False, "--mkdir",
                                     help="Create TARGET and its missing parents (mode 0755) "
                                          "inside the guest's root; removed again if the "
                                          "mount fails."),
          dry_run: bool = DRY_RUN, json_local: bool = JSON_OPT) -> None:
    """Mount into a guest through its mirror. TARGET is resolved inside the guest's root.

    -o takes mount(8)'s options: per-mount flags (ro, nosuid, nodev, noexec, noatime, ...)
    for binds too, and the filesystem's own options, which the kernel checks before anything
    is mounted. Propagation options are refused: mirrormount owns them."""
    g = settings(ctx).guests
    if dry_run:
        show_plan(ctx, json_local, g.plan_mount(name, source, target, fstype, options, bind,
                                                guest_only, mkdir))
        return
    done = g.mount(name, source, target, fstype, options, bind, guest_only, mkdir)
    if want_json(ctx, json_local):
        emit_json(done.to_json())
    elif done.redirected:
        # Say where it went when a guest symlink led elsewhere (/var/run -> /run).
        typer.echo(f"mounted on {done.target} in {name} (typed {done.typed}: a symlink in "
                   "the guest)")


@app.command()
@reports_errors
def umount(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
           target: str = typer.Argument(..., help="A mount point inside the guest."),
           lazy: bool = typer.Option(False, "--lazy", help="Detach now; report who holds it."),
           wait: float = typer.Option(0.0, "--wait", metavar="SECONDS",
                                      help="Retry until free or the time runs out."),
           dry_run: bool = DRY_RUN, json_local: bool = JSON_OPT) -> None:
    """Unmount a guest path (on both sides). Exits 3 when busy, saying who holds it.

    With --wait and --lazy together: wait for a clean unmount, then detach what is left."""
    s = settings(ctx)
    g = s.guests
    seconds(wait, "--wait")
    if dry_run:
        show_plan(ctx, json_local, g.plan_umount(name, target, lazy))
        return
    # The busy finder reads every namespace and /proc: imported only when it must explain.
    from ..busy import finder
    identity = None
    if lazy:
        g.record(name)
    # Resolved before the unmount (lazy or not): afterwards the path names nothing in the
    # guest, and the device and fs root are what we follow to the leftovers: a copy in a
    # namespace propagation does not reach keeps the filesystem alive though umount succeeds.
    try:
        identity = finder.resolve_target(f"{name}:{target}", s.layout)
    except (UsageError, OSError, OperationError):
        identity = None   # not a path in the guest: umount says so below
    try:
        g.umount(name, target, lazy=lazy, wait=wait)
    except UmountBusy as busy:
        try:
            report = finder.find_pins(f"{name}:{target}", s.layout)
        except UsageError:
            report = None     # it went away meanwhile: nothing left to explain
        text = finder.explain(report, name, target, busy.lead) if report else ""
        if not text:
            text = (f"{busy.lead}: target is busy (EBUSY), but no holder was found"
                    + (f" ({report.uninspected} process(es) could not be inspected)"
                       if report and report.uninspected else ""))
        raise BusyError(text) from None
    report = None
    if identity is not None:
        try:
            report = finder.find_residue(identity, s.layout)
        except (OSError, OperationError):
            if lazy:
                raise
            report = None     # the unmount itself succeeded: a failed look after is no error
    left = finder.residue_left(report) if report is not None else []
    if not lazy:
        # Unmounted, exit 0; but say so when a copy still keeps the filesystem alive.
        if want_json(ctx, json_local):
            emit_json({"guest": name, "target": target, "left": left})
        elif left and report is not None:
            typer.echo(finder.explain(report, name, target,
                                      f"mirrormount: warning: unmounted {target} in {name}, but the "
                                      "filesystem is still held"), err=True)
        return
    if want_json(ctx, json_local):
        emit_json(dict(report.to_json(), left=left) if report is not None else None)
    elif report is not None and report.pins:
        typer.echo(finder.explain(report, name, target,
                                  f"detached {target} in {name}, but the filesystem is "
                                  "still held"))
    else:
        typer.echo(f"detached {target} in {name}; nothing holds the filesystem any more")


@app.command()
@reports_errors
def repair(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
           dry_run: bool = DRY_RUN,
           json_local: bool = JSON_OPT) -> None:
    """Re-join a broken mirror: every mount that left its copy's peer group joins it again
    (move_mount MOVE_MOUNT_SET_GROUP, Linux 5.15+), and what only one side has is copied to
    the other. Exits 0 when status is intact afterwards, 1 otherwise, saying what is left."""
    g = settings(ctx).guests
    require_root("repair")
    if dry_run and want_json(ctx, json_local):
        from ..guest.ops import ops_json
        plan = g.plan_repair(name)
        emit_json({"ops": ops_json(plan.ops), "left": list(plan.left),
                   "cannot": list(plan.cannot)})
        if plan.cannot:
            raise typer.Exit(EXIT_FAILED)
        return
    if dry_run:
        from ..guest.ops import render
        plan = g.plan_repair(name)
        text = render(plan.ops) if plan.ops else "# nothing to re-join or copy\n"
        text += "".join(f"# left as it is: {w}\n" for w in plan.left)
        text += "".join(f"# cannot heal: {w}\n" for w in plan.cannot)
        typer.echo(text, nl=False)
        if plan.cannot:
            raise typer.Exit(EXIT_FAILED)
        return
    rep = g.repair(name)
    if want_json(ctx, json_local):
        emit_json(rep.to_json())
    else:
        for number, why in enumerate(rep.steps, start=1):
            typer.echo(f"step {number}: {why}")
        for why in rep.left:
            typer.echo(f"left as it is: {why}")
        if not rep.steps:
            typer.echo(f"{name}: nothing to re-join or copy")
    if not rep.ok:
        problems = [*rep.cannot, *(rep.status.problems if rep.status else [])]
        raise OperationError(f"{name}: the mirror is not intact after repair: "
                             + "; ".join(dict.fromkeys(problems)))
    if rep.cannot:
        # status judges the peer groups, which are whole; what repair could not mend (two
        # sides showing different filesystems at a path) still makes this run a failure
        raise OperationError(f"{name}: the mirror is intact, but repair could not heal: "
                             + "; ".join(rep.cannot))
    if not want_json(ctx, json_local):
        typer.echo(f"{name}: mirror intact")


@app.command()
@reports_errors
def destroy(ctx: typer.Context,
            names: List[str] = typer.Argument(..., metavar="NAME...",
                                              help="Existing guests' names."),
            force: bool = typer.Option(False, "--force", help="TERM, wait, then KILL."),
            grace: float = typer.Option(5.0, "--grace", metavar="SECONDS",
                                        help="With --force: how long TERM has before KILL."),
            dry_run: bool = DRY_RUN, json_local: bool = JSON_OPT) -> None:
    """Unmount a guest's mirror and remove its state; refuses while processes are inside."""
    g = settings(ctx).guests
    if len(set(names)) != len(names):
        raise UsageError("a name is given twice")
    seconds(grace, "--grace")
    # Every name planned before the first change: a name that does not exist (exit 2,
    # before any other verdict), or a guest with processes inside (without --force),
    # refuses the whole batch. Guests that joined another's namespaces go before it, so
    # the order the names are given in does not matter.
    for n in names:
        validate_name(n)
    if not dry_run:
        require_root("destroy")
    g.require_existing(names)
    order = g.destroy_order(names)
    plans = [g.plan_destroy(n, force, grace, going=order[:i]) for i, n in enumerate(order)]
    if dry_run:
        if want_json(ctx, json_local):
            from ..guest.ops import ops_json
            emit_json([{"name": n, "ops": ops_json(p)} for n, p in zip(order, plans)])
        else:
            from ..guest.ops import render
            typer.echo("".join(render(p) for p in plans), nl=False)
        return
    done: list[str] = []
    # The guests' own mounts, resolved before they go: a host process camped in a mirror
    # keeps such a filesystem alive, detached, after the destroy (reported at the end).
    identities = _destroy_identities(settings(ctx).layout, order)
    for n in order:
        try:
            # A stop lands between two steps (teardown steps are idempotent: destroy again
            # finishes the job), or once this guest is gone and reported.
            with signals.deferred():
                g.destroy(n, force=force, grace=grace)
                done.append(n)
                if not want_json(ctx, json_local):
                    typer.echo(f"destroyed {n}")
                faults.at("reported")
        except BaseException as exc:
            signals.end_batch("destroy", exc, done, [m for m in order if m not in done])
    as_json = want_json(ctx, json_local)
    residue = _destroy_residue(settings(ctx).layout, identities, warn=not as_json)
    if as_json:
        emit_json([{"name": n, "destroyed": n in done, "left": residue.get(n, [])}
                   for n in order])


def _destroy_identities(layout, names: List[str]) -> dict:
    """Each guest's own mounts before destroy (busy/finder.guest_identities); none when
    they cannot be read: the destroy itself must not depend on it."""
    from ..busy import finder
    try:
        return finder.guest_identities(layout, list(names))
    except (UsageError, OSError, OperationError):
        return {}


def _destroy_residue(layout, identities: dict, warn: bool) -> dict[str, list[dict]]:
    """After destroy: what still keeps one of the guests' filesystems alive (a process
    camped in a mirror holds it detached), from one /proc pass for the whole batch. Warned
    on stderr; returned (name -> rows) for the JSON."""
    flat = [(n, t) for n, ts in identities.items() for t in ts]
    if not flat:
        return {}
    from ..busy import finder
    left: dict[str, list[dict]] = {}
    try:
        reports = finder.find_residues([t for _, t in flat], layout)
    except (OSError, OperationError):
        return {}     # the guests are destroyed: a failed look after is no error
    for (name, ident), rep in zip(flat, reports):
        left.setdefault(name, []).extend(dict(row, guest_path=ident.guest_path)
                                         for row in finder.residue_left(rep))
        if rep.pins and warn:
            typer.echo(finder.explain(rep, name, ident.guest_path,
                                      f"mirrormount: warning: destroyed {name}, but its filesystem at "
                                      f"{ident.guest_path} is still held"), err=True)
    return left


@app.command()
@reports_errors
def doctor(ctx: typer.Context, json_local: bool = JSON_OPT) -> None:
    """Check the kernel, propagation of /, BASE and STATE, mount-max headroom, privilege."""
    from .doctor import run_checks
    checks = run_checks(settings(ctx).guests.layout)    # real paths, as every verb uses
    if want_json(ctx, json_local):
        emit_json([c.to_json() for c in checks])
    else:
        for c in checks:
            typer.echo(f"{c.level:<4}  {c.name:<22} {c.detail}")
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(EXIT_FAILED)


@app.command()
@reports_errors
def demo(ctx: typer.Context,
         propagation: str = typer.Option("private", "--propagation",
                                         help="The throwaway root's propagation: private or "
                                              "rshared (like systemd).")) -> None:
    """A safe tour in a throwaway namespace: the mirror both ways, and per-guest hostnames."""
    from .demo import run_demo
    raise typer.Exit(run_demo(propagation))
