"""The systemd template unit `mirrormount@.service`: guest NAME made at boot from
/etc/mirrormount/NAME.toml, started, and on stop stopped cleanly and destroyed. Pure: paths
in, unit text out (cli/unit.py finds the executable and prints it).

Why each setting (systemd.service(5), systemd.kill(5), systemd.exec(5)):
- Type=oneshot + RemainAfterExit=yes: create and start are commands that finish; the guest
  lives on without them (its namespaces are held by nsfs binds, its init or reaper was forked
  by them). oneshot is the one type that allows several ExecStart= lines, run in order, each
  having to succeed; RemainAfterExit keeps the unit active once they have, so that stopping
  it later runs ExecStop=.
- KillMode=control-group (the default, written out because it matters): the guest's init and
  reaper are in this unit's cgroup, and systemd runs ExecStop= *before* it signals what is
  left in the cgroup ("After the commands configured in this option are run, ... any
  processes remaining for it are terminated according to the KillMode= setting"). So
  `mirrormount stop` always gets to run the guest's own shutdown first (init's stop signal,
  or the recipe's shutdown commands, then TERM, wait, KILL); only what survives it gets
  systemd's SIGTERM, then SIGKILL after TimeoutStopSec=. KillMode=none would leave such
  survivors running, and is deprecated; mixed would SIGKILL them without a TERM (the main
  process, oneshot's last ExecStart=, is long gone).
- ExecStop= stops, then destroys with --force (nothing is left to force after a clean stop;
  after a failed one, destroy's TERM and KILL still leave nothing behind, and stop's own
  failure, prefixed "-", is in the journal). Not ExecStopPost=: that also runs after a failed
  start, and a create that failed because NAME already exists (made by hand, not by this
  unit) must not get that guest destroyed. The price: when create succeeded and start then
  failed, the guest stays made, and `mirrormount destroy NAME` is needed before the next try.
- After=local-fs.target: the rootfs and the recipe's bind sources must be mounted first, and
  at shutdown the guest is stopped before they are unmounted (stop order is the reverse).
- No PrivateTmp=, ProtectSystem=, PrivateMounts= or any other option that gives the service a
  mount namespace of its own: mirrormount must make the mirror in the host's namespace.
- TimeoutStopSec=: longer than stop's own --timeout, so that stop can KILL and report itself
  before systemd steps in.
"""
from __future__ import annotations

UNIT_NAME = "mirrormount@.service"
RECIPES = "/etc/mirrormount"
DEFAULT_STOP_TIMEOUT = 30.0

_TEMPLATE = """\
# {unit_name}: a mirrormount guest NAME made from {recipes}/NAME.toml.
# Install: mirrormount systemd-unit > /etc/systemd/system/{unit_name}
#          systemctl daemon-reload; systemctl enable --now mirrormount@NAME
[Unit]
Description=mirrormount guest %i
# The rootfs and the recipe's sources are local mounts; stopped before they go at shutdown.
After=local-fs.target
# A missing recipe fails the unit (and says so) rather than skipping it quietly.
AssertPathExists={recipes}/%i.toml

[Service]
# create and start finish; the guest lives on in namespaces held by nsfs binds.
Type=oneshot
RemainAfterExit=yes
{environment}ExecStart={exe} create --recipe {recipes}/%i.toml %i
ExecStart={exe} start %i
# ExecStop= runs before systemd signals what is left in this cgroup (KillMode=control-group):
# the guest's init and reaper get the guest's own shutdown first; only survivors of it get
# systemd's SIGTERM, then SIGKILL after TimeoutStopSec=.
ExecStop=-{exe} stop %i --timeout {stop_timeout}
# Then dispose of the mirror and the namespaces. Not ExecStopPost=, which also runs after a
# failed start: a create that failed because NAME exists must not destroy that guest.
ExecStop={exe} destroy --force %i
KillMode=control-group
TimeoutStartSec=5min
TimeoutStopSec={stop_limit}s
# No PrivateTmp=, ProtectSystem=, PrivateMounts=: the mirror must be made in the host's
# mount namespace, not in one of the service's own.

[Install]
WantedBy=multi-user.target
"""


def unit_word(text: str) -> str:
    """One word of a unit file command line: '%' doubled (systemd specifiers), quoted when it
    holds whitespace or a quote (systemd.syntax(7): C-style escapes in double quotes)."""
    text = text.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\;" for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _seconds(s: float) -> str:
    return str(int(s)) if s == int(s) else str(s)


def render_unit(exe: str, stop_timeout: float = DEFAULT_STOP_TIMEOUT,
                env: dict[str, str] | None = None, recipes: str = RECIPES) -> str:
    """The unit text. exe: the mirrormount executable's absolute path (systemd runs no
    search); stop_timeout: seconds given to `stop --timeout`; env: extra environment
    (MIRRORMOUNT_BASE, MIRRORMOUNT_STATE) written as Environment= lines."""
    environment = "".join(f"Environment={unit_word(f'{k}={v}')}\n"
                          for k, v in sorted((env or {}).items()))
    # Room for stop's own KILL and report, then for destroy (it needs no grace: stop left
    # nothing running) before systemd's SIGTERM.
    stop_limit = int(stop_timeout) + 60
    return _TEMPLATE.format(unit_name=UNIT_NAME, recipes=recipes, exe=unit_word(exe),
                            environment=environment, stop_timeout=_seconds(stop_timeout),
                            stop_limit=stop_limit)
