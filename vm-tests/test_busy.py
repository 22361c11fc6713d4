"""Issue 3: the busy-mount finder (`mirrormount busy`, `busy --all`) and `umount` that explains.

Every pin type this kernel can produce is made here, found with the right host pid, guest pid,
guest and path, and gone once released: cwd, root, exe, fd, mmap (host and guest processes),
submount, leaked-copy (private copy, slave copy with a mount of its own, namespace held only by
an nsfs file, namespace held only by an open fd), detached, loop and swap. (nfsd-export and
holder need nfsd and device-mapper, which this kernel lacks: tests/test_finder.py covers them.)

Filesystems are ext4 on loop devices this module creates for itself (LOOP_CTL_ADD, numbers
2000-2999, so `losetup -f` elsewhere never hands them out twice) and deletes afterwards. Loop
devices and swap are global to the machine: swap is turned off before the sandbox goes, loop
devices are detached and deleted after it, whatever happened.
"""
from __future__ import annotations

import json
import os
import random
import select
import subprocess

import pytest

from conftest import OwnLoops, q, wait_for

MIRROR = "/container/c1"
X = f"{MIRROR}/mnt/x"                  # the guest's /mnt/x, seen through the host mirror
GUEST_MNT_NS = "/run/mirrormount/c1/ns/mnt"
GUEST_PID_NS = "/run/mirrormount/c1/ns/pid"

MMAP_CAMPER = """
import mmap, os, sys, time
f = open(sys.argv[1], "r+b")
m = mmap.mmap(f.fileno(), 0)
f.close()
# Python's mmap keeps a dup of the fd: close every fd to the file, so only the mapping pins it.
for name in os.listdir("/proc/self/fd"):
    try:
        if os.readlink(f"/proc/self/fd/{name}") == sys.argv[1]:
            os.close(int(name))
    except OSError:
        pass
print(os.getpid(), flush=True)
time.sleep(300)
"""

CHROOT_CAMPER = """
import os, sys, time
os.chroot(sys.argv[1])
os.chdir("/")
print(os.getpid(), flush=True)
time.sleep(300)
"""


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def loops():
    """make(sb, image) -> /dev/loopN: a loop device of this test's own, bound to `image` (a
    path inside the sandbox). Request this before `sandbox`: it is torn down after it, when no
    namespace mounts the device any more, and then detached and deleted."""
    own = OwnLoops(2000, 3000)

    def make(sb, image: str) -> str:
        dev = own.add()
        sb.sh(f"losetup {dev} {q(image)}")
        # sysfs prints the file relative to our root; ours is the machine's, not the sandbox's,
        # so compare names only: unique per test.
        with open(f"/sys/block/{os.path.basename(dev)}/loop/backing_file") as f:
            assert f.read().strip().endswith(os.path.basename(image))
        return dev

    try:
        yield make
    finally:
        own.close()


@pytest.fixture
def swaps(sandbox):
    """A list to which a test adds (how to run swapoff, path): every swap it turned on. They
    are turned off before the sandbox goes (afterwards no path would reach the file)."""
    active: list[tuple[str, str]] = []
    yield active
    for where, path in active:
        run = sandbox.sh if where == "host" else guest_sh_for(sandbox)
        run(f"swapoff {q(path)} 2>/dev/null || true")
    left = sandbox.sh("cat /proc/swaps").stdout
    assert not any(p.rsplit("/", 1)[-1] in left for _, p in active), left


@pytest.fixture
def campers():
    """Long-running helpers (Popen of the nsenter outside the sandbox). Torn down before the
    sandbox: kill our nsenter; what it started inside dies with the sandbox right after."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()


# ----------------------------------------------------------------------------- helpers
def guest_sh_for(sb):
    def run(script: str, check: bool = True):
        # nsenter rather than `mirrormount exec`: the same namespaces, without a Python
        # start-up per command. --pid: the guest's /proc is its own pid namespace's.
        return sb.run(["nsenter", f"--mount={GUEST_MNT_NS}", f"--pid={GUEST_PID_NS}", "--",
                       "/bin/sh", "-c", script], check=check)
    return run


def start(sb, campers, script: str, guest: bool = False, timeout: float = 20) -> int:
    """Run `script` (which must print one pid, then hold) in the background; return the pid
    it printed: the sandbox's pid for host scripts, the guest's pid inside the guest."""
    if guest:
        p = subprocess.Popen(sb.enter_argv() + ["nsenter", f"--mount={GUEST_MNT_NS}",
                                                f"--pid={GUEST_PID_NS}", "--", "/bin/sh",
                                                "-c", script],
                             env=sb.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    else:
        p = sb.popen(script)
    campers.append(p)
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    line = p.stdout.readline() if ready else ""
    assert line.strip().isdigit(), f"camper did not start: {line!r} {script}"
    return int(line)


def host_pid_of(sb, guest_pid: int) -> int:
    """The host pid of the guest's process `guest_pid`, from NSpid and the pid namespace."""
    pidns = sb.sh(f"stat -L -c %i {GUEST_PID_NS}").stdout.strip()
    out = sb.sh(
        "for s in /proc/[0-9]*/status; do p=${s#/proc/}; p=${p%/status}; "
        "set -- $(grep NSpid: $s 2>/dev/null); "
        f'[ "$#" -ge 3 ] && [ "$3" = {guest_pid} ] && '
        f'[ "$(stat -L -c %i /proc/$p/ns/pid 2>/dev/null)" = {pidns} ] && echo $p; '
        "done; true").stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def kill(sb, *pids: int) -> None:
    """SIGKILL and wait until each is gone (or a zombie, which holds nothing)."""
    sb.sh(f"kill -9 {' '.join(map(str, pids))} 2>/dev/null; true")
    for pid in pids:
        assert wait_for(lambda: sb.sh(
            f"! test -e /proc/{pid}/ns/mnt || grep -q '^State:.*Z' /proc/{pid}/status",
            check=False).returncode == 0), pid


def ns_label(sb, path: str = "/proc/self/ns/mnt") -> str:
    return f"mnt:[{sb.sh(f'stat -L -c %i {path}').stdout.strip()}]"


def busy(sb, *args: str, code: int | None = None):
    r = sb.mm("busy", "--json", *args)
    assert not r.stderr, f"busy {args}: {r.returncode} {r.stderr}{r.stdout}"
    js = r.json
    # the contract: exactly 3 when busy, exactly 0 when not
    assert r.returncode == (3 if js["busy"] else 0), (r.returncode, js["busy"])
    assert js["busy"] == bool(js["pins"])
    if code is not None:
        assert r.returncode == code, json.dumps(js["pins"], indent=1)
    return js


def pins(js, how: str | None = None, pid: int | None = None) -> list[dict]:
    return [p for p in js["pins"] if (how is None or p["how"] == how)
            and (pid is None or p["pid"] == pid)]


def setup_guest_ext4(sb, loops, name: str = "x") -> str:
    """Guest c1 (own pid namespace) with an ext4 on a fresh loop device at /mnt/x."""
    r = sb.mm("create", "--ns", "pid", "c1")
    assert r.returncode == 0, r.stderr
    image = f"/tmp/busy-{name}-{os.getpid()}-{random.randrange(1 << 30)}.img"
    sb.sh(f"truncate -s 32M {image} && mkfs.ext4 -q {image}")
    dev = loops(sb, image)
    sb.sh(f"mkdir -p {X}")
    r = sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4")
    assert r.returncode == 0, r.stderr
    return dev


# ----------------------------------------------------------------------------- tests
def test_process_pins_host_and_guest(loops, sandbox, campers):
    sb = sandbox
    setup_guest_ext4(sb, loops)
    sb.sh(f"echo data > {X}/file && cp /bin/sleep {X}/sleep-here && mkdir {X}/d "
          f"&& mkdir -p {MIRROR}/mnt/y")
    host_ns, guest_ns = ns_label(sb), ns_label(sb, GUEST_MNT_NS)
    py = sb.env["PATH"].split(":")[0] + "/python"
    cwd = start(sb, campers, f"cd {X}/d && echo $$ && exec sleep 300")
    fd = start(sb, campers, f"exec 3<{X}/file; cd /; echo $$; exec sleep 300")
    exe = start(sb, campers, f"cd /; {X}/sleep-here 300 & echo $!; wait")
    mm = start(sb, campers, f"cd / && exec {py} -c {q(MMAP_CAMPER)} {X}/file")
    root = start(sb, campers, f"exec {py} -c {q(CHROOT_CAMPER)} {X}")
    g_cwd = start(sb, campers, "cd /mnt/x && echo $$ && exec sleep 300", guest=True)
    g_fd = start(sb, campers, "exec 4</mnt/x/file; cd /; echo $$; exec sleep 300", guest=True)
    h_cwd, h_fd = host_pid_of(sb, g_cwd), host_pid_of(sb, g_fd)
    assert (h_cwd, h_fd) != (g_cwd, g_fd)          # a pid namespace of its own
    # Decoys: a camper on another filesystem right next to it, and a namespace whose copy is
    # a peer that the guest's umount removes too.
    decoy_cwd = start(sb, campers, f"cd {MIRROR}/mnt/y && echo $$ && exec sleep 300")
    decoy_ns = start(sb, campers, "exec unshare -m --propagation unchanged "
                                  "sh -c 'echo $$; exec sleep 300'")

    js = busy(sb, "c1:/mnt/x", code=3)
    assert js["target"] == "c1:/mnt/x" and js["uninspected"] == 0
    assert js["device"]["fstype"] == "ext4" and js["device"]["majmin"].startswith("7:")
    copies = {(c["guest"], c["path"]) for c in js["copies"]}
    assert {("c1", "/mnt/x"), ("host", X)} <= copies

    def one(how, pid, path, guest="host", gpid=None, ns=host_ns, comm=None):
        got = pins(js, how, pid)
        assert len(got) == 1, (how, pid, js["pins"])
        p = got[0]
        assert (p["path"], p["guest"], p["guest_pid"], p["namespace"], p["user"]) == \
            (path, guest, gpid or pid, ns, "root"), p
        if comm:
            assert p["comm"] == comm, p

    one("cwd", cwd, f"{X}/d", comm="sleep")
    one("fd", fd, f"{X}/file", comm="sleep")
    one("exe", exe, f"{X}/sleep-here")
    one("mmap", exe, f"{X}/sleep-here")            # a program's text is mapped as well
    one("mmap", mm, f"{X}/file")
    assert not pins(js, "fd", mm), "the mmap camper closed every fd to the file"
    one("root", root, X)
    one("cwd", h_cwd, "/mnt/x", guest="c1", gpid=g_cwd, ns=guest_ns, comm="sleep")
    one("fd", h_fd, "/mnt/x/file", guest="c1", gpid=g_fd, ns=guest_ns)
    for decoy in (decoy_cwd, decoy_ns):
        assert not pins(js, pid=decoy), pins(js, pid=decoy)
    assert not pins(js, "leaked-copy"), js["pins"]
    assert {p["how"] for p in js["pins"]} == {"cwd", "fd", "exe", "mmap", "root"}

    # The human form says the same in words.
    text = sb.mm("busy", "c1:/mnt/x")
    assert text.returncode == 3
    assert f"host process {cwd} (sleep, user root) has its working directory in {X}/d" \
        in text.stdout
    assert f"process {h_cwd} of guest c1 (pid {g_cwd} there; sleep, user root)" in text.stdout

    kill(sb, cwd, fd, exe, mm, root, h_cwd, h_fd)
    js = busy(sb, "c1:/mnt/x", code=0)
    assert js["pins"] == [] and not js["busy"]
    assert busy(sb, X, code=0)["pins"] == []       # the same mount by its host path


def test_submounts_and_leaked_copies(loops, sandbox, campers):
    sb = sandbox
    setup_guest_ext4(sb, loops)
    guest = guest_sh_for(sb)
    sb.sh(f"mkdir {X}/sub {X}/own")
    guest("mount -t tmpfs sub /mnt/x/sub")
    guest_ns = ns_label(sb, GUEST_MNT_NS)
    # 1. a private copy: `unshare -m` makes every copied mount private
    private = start(sb, campers, "exec unshare -m --propagation private "
                                 "sh -c 'echo $$; exec sleep 300'")
    # 2. a peer turned slave with a mount of its own beneath: propagation skips it (§7)
    slave = start(sb, campers, "exec unshare -m --propagation unchanged sh -c "
                               f"'mount --make-slave {X} && mount -t tmpfs own {X}/own && "
                               "echo $$ && exec sleep 300'")
    # 3. a namespace that only an nsfs file holds. kernel-findings §6: from a non-initial
    #    namespace the bind fails with EINVAL now and then, as namespace ids made on
    #    different CPUs are not ordered; retrying on the same CPU can keep failing, so each
    #    retry runs on the next CPU (as nursery.build_and_hold does).
    sb.sh("mkdir -p /run/nsh && mount -t tmpfs nsh /run/nsh && mount --make-private /run/nsh "
          "&& touch /run/nsh/mnt && n=$(nproc) && for i in $(seq 0 15); do "
          "taskset -c $((i % n)) unshare --mount=/run/nsh/mnt --propagation private true "
          "2>/dev/null && break; done && findmnt -n /run/nsh/mnt >/dev/null")
    file_ns = ns_label(sb, "/run/nsh/mnt")
    # 4. a namespace that only an open fd holds: its one process exited
    fd_holder = start(sb, campers,
                      "unshare -m --propagation private sleep 300 & P=$!; "
                      'while [ "$(readlink /proc/$P/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ];'
                      " do sleep 0.01; done; exec 7</proc/$P/ns/mnt; kill -9 $P; "
                      "echo $$; exec sleep 300")
    fd_ns = sb.sh(f"readlink /proc/{fd_holder}/fd/7").stdout.strip()
    assert fd_ns not in (ns_label(sb), ns_label(sb, f"/proc/{private}/ns/mnt"))
    # 5. a decoy: peers of the mirror, which the guest's umount cleans up
    decoy = start(sb, campers, "exec unshare -m --propagation unchanged "
                               "sh -c 'echo $$; exec sleep 300'")

    js = busy(sb, "c1:/mnt/x", code=3)
    sub = pins(js, "submount")
    assert [(p["path"], p["guest"], p["namespace"], p["pid"]) for p in sub
            if p["guest"] == "c1"] == [("/mnt/x/sub", "c1", guest_ns, None)]
    # the host mirror's copy of /mnt/x/sub is the same mount family: not listed twice
    assert not [p for p in sub if p["path"] == f"{X}/sub"], sub
    slave_ns = ns_label(sb, f"/proc/{slave}/ns/mnt")
    assert [(p["path"], p["namespace"]) for p in sub if p["guest"] == "host"] == \
        [(f"{X}/own", slave_ns)]
    leaks = {p["namespace"]: p for p in pins(js, "leaked-copy")}
    assert set(leaks) == {ns_label(sb, f"/proc/{private}/ns/mnt"), slave_ns, file_ns, fd_ns}
    for p in leaks.values():
        assert p["path"] == X and p["guest"] == "host", p
    assert leaks[ns_label(sb, f"/proc/{private}/ns/mnt")]["pid"] == private
    assert leaks[slave_ns]["pid"] == slave
    assert leaks[fd_ns]["pid"] == fd_holder and leaks[fd_ns]["comm"] == "sleep"
    assert leaks[file_ns]["pid"] is None           # nothing but a file holds it
    assert not pins(js, pid=decoy)
    assert len(js["copies"]) == 7                  # guest, host, private, slave, file, fd, decoy

    # The submount makes the guest's own umount fail, and the message says so.
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 3
    assert "cannot unmount /mnt/x in c1: /mnt/x/sub is mounted beneath it in guest c1" \
        in r.stderr

    # Release each; nothing is left.
    guest("umount /mnt/x/sub")
    kill(sb, private, slave, fd_holder)
    sb.sh("umount /run/nsh/mnt")
    js = busy(sb, "c1:/mnt/x", code=0)
    assert js["pins"] == []
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 0, r.stderr
    # the decoy's copy went with it, as propagation promised
    assert X not in sb.sh(f"cat /proc/{decoy}/mountinfo").stdout


def test_umount_explains_waits_and_detaches(loops, sandbox, campers):
    sb = sandbox
    dev = setup_guest_ext4(sb, loops)
    majmin = f"{os.major(os.stat(dev).st_rdev)}:{os.minor(os.stat(dev).st_rdev)}"
    pid = start(sb, campers, f"cd {X} && echo $$ && exec sleep 300")

    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 3
    assert (f"cannot unmount /mnt/x in c1: host process {pid} (sleep, user root) has its "
            f"working directory in {X}") in r.stderr, r.stderr
    r = sb.mm("umount", "c1", "/mnt/x", "--wait", "0.6")
    assert r.returncode == 3
    assert "after waiting 0.6s" in r.stderr and f"host process {pid}" in r.stderr

    # --wait: the camper leaves after a second; the umount then goes through.
    sb.sh(f"(sleep 1; kill -9 {pid}) >/dev/null 2>&1 &")
    r = sb.mm("umount", "c1", "/mnt/x", "--wait", "20")
    assert r.returncode == 0, r.stderr
    assert X not in sb.mountpoints()

    # --lazy: detached at once; the report names who still holds the filesystem.
    assert sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4").returncode == 0
    pid = start(sb, campers, f"cd {X} && echo $$ && exec sleep 300")
    r = sb.mm("umount", "c1", "/mnt/x", "--lazy")
    assert r.returncode == 0, r.stderr
    assert f"detached /mnt/x in c1, but the filesystem is still held: host process {pid}" \
           f" (sleep, user root) still uses / on a lazily detached copy" in r.stdout, r.stdout
    assert X not in sb.mountpoints()
    for target in (majmin, dev):
        js = busy(sb, target, code=3)
        assert [(p["how"], p["pid"], p["guest"]) for p in js["pins"]] == \
            [("detached", pid, "host")]
        assert js["copies"] == []
    kill(sb, pid)
    assert busy(sb, majmin, code=0)["pins"] == []


def test_loop_and_swap(loops, sandbox, swaps):
    sb = sandbox
    setup_guest_ext4(sb, loops)
    guest = guest_sh_for(sb)
    # swap files must have no holes: write them out
    sb.sh(f"truncate -s 4M {X}/inner.img && for s in swap1 swap2; do "
          f"dd if=/dev/zero of={X}/$s bs=1M count=4 status=none && chmod 600 {X}/$s && "
          f"mkswap {X}/$s >/dev/null; done")
    inner = loops(sb, f"{X}/inner.img")
    sb.sh(f"swapon {X}/swap1")
    swaps.append(("host", f"{X}/swap1"))
    guest("swapon /mnt/x/swap2")                  # turned on inside the guest
    swaps.append(("guest", "/mnt/x/swap2"))
    host_ns, guest_ns = ns_label(sb), ns_label(sb, GUEST_MNT_NS)

    js = busy(sb, "c1:/mnt/x", code=3)
    got = {(p["how"], p["path"], p["guest"], p["namespace"], p["pid"]) for p in js["pins"]}
    assert got == {("loop", f"{X}/inner.img", "host", host_ns, None),
                   ("swap", f"{X}/swap1", "host", host_ns, None),
                   ("swap", "/mnt/x/swap2", "c1", guest_ns, None)}, got
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 3
    assert f"{X}/inner.img on it backs loop device {inner}" in r.stderr
    assert "/mnt/x/swap2 on it is in use as swap" in r.stderr

    sb.sh(f"swapoff {X}/swap1")
    guest("swapoff /mnt/x/swap2")
    sb.sh(f"losetup -d {inner}")
    assert wait_for(lambda: not os.path.exists(f"/sys/block/{inner[5:]}/loop/backing_file"))
    assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []


def test_processes_vanishing_mid_scan(loops, sandbox, campers):
    sb = sandbox
    setup_guest_ext4(sb, loops)
    sb.sh(f"echo x > {X}/f")
    pid = start(sb, campers, f"cd {X} && echo $$ && exec sleep 300")
    # A storm of short-lived processes, many with an fd or cwd on the target, dying while the
    # finder reads their /proc entries.
    storm = start(sb, campers,
                  "echo $$; while :; do for i in 1 2 3 4 5 6 7 8; do "
                  f"(exec 3<{X}/f; cd {X}; exec sleep 0.0$i) & "
                  "/bin/true & done; wait; done")
    for _ in range(3):
        js = busy(sb, "c1:/mnt/x", code=3)
        assert [p["pid"] for p in pins(js, "cwd") if p["comm"] == "sleep"
                and p["path"] == X and p["pid"] == pid] == [pid]
    kill(sb, storm, pid)


def test_busy_all_and_bad_targets(sandbox, campers):
    sb = sandbox
    assert sb.mm("create", "c1", "c2").returncode == 0
    for g in ("c1", "c2"):
        sb.sh(f"mkdir -p /container/{g}/mnt/a /container/{g}/mnt/b")
        for d in ("a", "b"):
            assert sb.mm("mount", g, "tmpfs", f"/mnt/{d}", "-t", "tmpfs").returncode == 0
    r = sb.mm("busy", "--all", "--json")
    assert r.returncode == 0 and r.json == [], r.stdout
    pid = start(sb, campers, "cd /container/c2/mnt/b && echo $$ && exec sleep 300")
    r = sb.mm("busy", "--all", "--json")
    assert r.returncode == 3, r.stderr
    assert [x["target"] for x in r.json] == ["c2:/mnt/b"]
    assert [(p["how"], p["pid"]) for p in r.json[0]["pins"]] == [("cwd", pid)]
    r = sb.mm("busy", "--all")
    assert r.returncode == 3 and "c2:/mnt/b" in r.stdout and str(pid) in r.stdout
    kill(sb, pid)
    assert sb.mm("busy", "--all").returncode == 0

    # Not busy: exit 0. Bad targets: exit 2 and one line on stderr.
    assert sb.mm("busy", "c1:/mnt/a").returncode == 0
    for args in (["/nonexistent"], ["c9:/mnt/a"], ["c1:/nonexistent"], ["c1:relative"],
                 ["-x:/y"], ["/dev/null"], ["c1:/mnt/a", "--all"], []):
        r = sb.mm("busy", *args)
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith(("mirrormount: ", "Usage:")), r.stderr
        assert "Traceback" not in r.stderr
