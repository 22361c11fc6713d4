"""Run inside a guest by test_confine.py: a root process of that guest trying, by every path
it can think of, to open another guest's namespaces or state, or the host's namespaces it
does not share. Prints JSON: what it reached (should be nothing), what it tried, and
whether it could open its own namespaces (so an empty result means something).

argv[1]: JSON {"forbidden": [{"id": [dev, ino], "what": "..."}], "handles": [{"ns_id": N,
"inum": I, "type": CLONE_FLAG, "what": "..."}], "names": ["c2", ...]}.

Test code playing the attacker: ctypes here only reaches open_by_handle_at, which Python
lacks (mirrormount's own ctypes use stays in kernel/syscalls.py).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import json
import os
import struct
import subprocess
import sys

NS_MNT_GET_NEXT = 0x8010B70B    # include/uapi/linux/nsfs.h (6.12+)
NS_MNT_GET_PREV = 0x8010B70C
NS_GET_PARENT = 0xB702
FILEID_NSFS = 0xF1              # include/linux/exportfs.h (6.18+)
FD_NSFS_ROOT = -10003
OPEN_BY_HANDLE_AT = {"x86_64": 304, "aarch64": 265}


def main() -> None:
    spec = json.loads(sys.argv[1])
    forbidden = {tuple(x["id"]): x["what"] for x in spec["forbidden"]}
    reached: list[str] = []
    tried = 0

    def judge(fd: int, how: str) -> None:
        st = os.fstat(fd)
        what = forbidden.get((st.st_dev, st.st_ino))
        if what:
            reached.append(f"{how} -> {what}")

    def attempt(path: str) -> None:
        nonlocal tried
        tried += 1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError:
            return
        try:
            judge(fd, path)
        finally:
            os.close(fd)

    def proc_paths() -> list[str]:
        out = glob.glob("/proc/*/ns/*") + glob.glob("/proc/*/task/*/ns/*")
        for top in glob.glob("/proc/*/root") + glob.glob("/proc/*/cwd"):
            for name in spec["names"]:
                out += [f"{top}/run/mirrormount/{name}/{rest}"
                        for rest in ("guest.json", "claim", "ns/mnt", "ns/pid", "ns/uts")]
                out.append(f"{top}/container/{name}/srv/secret/token")
        return out + glob.glob("/proc/*/fd/*")

    # 1. paths: STATE, BASE, '..' tricks, and whatever lies in the usual places
    for name in [*spec["names"], ".nursery"]:
        for rest in ("guest.json", "claim", "ns/mnt", "ns/pid", "ns/uts", "mnt", "cpu"):
            attempt(f"/run/mirrormount/{name}/{rest}")
            attempt(f"/../../run/mirrormount/{name}/{rest}")
        attempt(f"/container/{name}/srv/secret/token")
        attempt(f"/container/../container/{name}/srv/secret/token")
    for top in ("/run", "/container", "/srv", "/tmp", "/mnt", "/var/run"):
        for dirpath, dirs, files in os.walk(top):
            for f in files:
                attempt(os.path.join(dirpath, f))
    # 2. /proc: every process's namespaces, root and cwd, and open fds
    for path in proc_paths():
        attempt(path)
    # 3. /proc unmounted (a pid namespace's own proc hid the host's before it was fixed)
    gone = subprocess.run(["umount", "-l", "/proc"], capture_output=True).returncode == 0
    if gone:
        for path in proc_paths():
            attempt(path)
        subprocess.run(["mount", "-t", "proc", "proc", "/proc"], capture_output=True)
        for path in proc_paths():
            attempt(path)
    # 4. walking mount namespaces (NS_MNT_GET_NEXT/PREV, 6.12+), and a pid namespace's parent
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    for request in (NS_MNT_GET_NEXT, NS_MNT_GET_PREV):
        cur = own
        for _ in range(64):
            tried += 1
            try:
                cur = fcntl.ioctl(cur, request, bytearray(16))
            except OSError:
                break
            judge(cur, f"ioctl {request:#x}")
    pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        tried += 1
        judge(fcntl.ioctl(pidns, NS_GET_PARENT), "NS_GET_PARENT of its pid namespace")
    except OSError:
        pass
    # 5. namespaces opened by file handle (nsfs handles, 6.18+): id and inode are guessable
    libc = ctypes.CDLL(None, use_errno=True)
    nr = OPEN_BY_HANDLE_AT.get(os.uname().machine)
    handle_errors = []
    for h in spec["handles"] if nr else []:
        raw = struct.pack("IiQII", 16, FILEID_NSFS, h["ns_id"], h["type"], h["inum"])
        buf = ctypes.create_string_buffer(raw, len(raw))
        for mount_fd in (FD_NSFS_ROOT, own):
            tried += 1
            fd = libc.syscall(nr, mount_fd, buf, os.O_RDONLY | os.O_CLOEXEC)
            if fd >= 0:
                judge(fd, f"open_by_handle_at({h['what']})")
                os.close(fd)
            else:
                handle_errors.append(errno.errorcode.get(ctypes.get_errno(), "?"))
    # and its own namespaces, to show the probe can open what it may
    own_ok = os.path.exists("/proc/self/ns/mnt") and os.fstat(own).st_ino > 0
    print(json.dumps({"reached": reached, "tried": tried, "own": own_ok,
                      "proc_unmounted": gone, "handle_errors": sorted(set(handle_errors)),
                      "container": sorted(os.listdir("/container"))
                      if os.path.isdir("/container") else None}))


if __name__ == "__main__":
    main()
