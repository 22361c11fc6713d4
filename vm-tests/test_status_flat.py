"""Issue 9's status target: `status NAME` reads nothing of other guests' mirrors on the
listmount path, and answers exactly as the mountinfo path does, with many guests and with
leaks planted.

- 40 other guests; c1 joined by j1 (net), so joined_by is read from the records.
- c2: a host mount outside BASE (shared /srv/h) bound into the mirror: the copy is a peer of
  a host mount, mounts leak both ways.
- c3: the same copy made a slave of that host peer group: it receives host mounts, which
  mirror mode forbids.
- c4: the mirror's top made private: it left the guest's peer group.
For each, `status --json` (and its exit code) is the same with listmount + statmount, with
MIRRORMOUNT_NO_LISTMOUNT=1 and with MIRRORMOUNT_NO_UNIQUE_ID=1; and the host table the
listmount path builds (kernel/mountns.table_around) holds no mount of another guest's mirror
and no nsfs file but c1's.
"""
from __future__ import annotations

import json

PROBE = r"""
import json
from mirrormount.kernel.mountns import table_around
t = table_around("/container/c1", ("/container", "/run/mirrormount"),
                 ("/run/mirrormount/c1/ns/mnt",))
print(json.dumps([m.mountpoint for m in t]))
"""

SWITCHES = ("MIRRORMOUNT_NO_LISTMOUNT", "MIRRORMOUNT_NO_UNIQUE_ID")


def _status(sb, name):
    r = sb.mm("--json", "status", name)
    return r.returncode, r.json


def test_status_same_on_both_paths_with_many_guests_and_leaks(sandbox):
    sb = sandbox
    sb.mm("create", "c1", "--ns", "net", check=True, timeout=120)
    sb.mm("create", *(f"g{i}" for i in range(40)), check=True, timeout=300)
    sb.mm("create", "j1", "--join", "net=c1", check=True, timeout=120)
    sb.mm("create", "c2", "c3", "c4", check=True, timeout=120)
    sb.sh("mkdir -p /srv/h /tmp/x && mount -t tmpfs h /srv/h && mount --make-shared /srv/h")
    sb.mm("mount", "c1", "tmpfs", "/tmp/x", "-t", "tmpfs", check=True)
    sb.sh("mkdir -p /container/c2/mnt/h /container/c3/mnt/h"
          " && mount --bind /srv/h /container/c2/mnt/h"
          " && mount --bind /srv/h /container/c3/mnt/h"
          " && mount --make-slave /container/c3/mnt/h"
          " && mount --make-private /container/c4")
    new = {n: _status(sb, n) for n in ("c1", "c2", "c3", "c4", "g7")}
    # The planted leaks are seen (so the comparison below compares answers that matter).
    assert new["c1"][0] == 0 and new["c1"][1]["mirror_intact"] is True
    assert new["c1"][1]["joined_by"] == {"j1": ["net"]}
    assert new["g7"][0] == 0 and new["g7"][1]["mirror_intact"] is True
    assert any("/container/c2/mnt/h shares peer group" in p and "/srv/h" in p
               for p in new["c2"][1]["problems"]), new["c2"]
    assert any("/container/c3/mnt/h receives mounts from host peer group" in p
               for p in new["c3"][1]["problems"]), new["c3"]
    assert any("/container/c4 is private, not shared" in p
               for p in new["c4"][1]["problems"]), new["c4"]
    for n in ("c2", "c3", "c4"):
        assert new[n][0] != 0 and new[n][1]["mirror_intact"] is False
    for switch in SWITCHES:
        sb.env[switch] = "1"
        try:
            for n, want in new.items():
                assert _status(sb, n) == want, (switch, n)
        finally:
            del sb.env[switch]
    seen = json.loads(sb.run(["python3", "-c", PROBE], check=True).stdout)
    under_base = sorted(p for p in seen if p.startswith("/container/"))
    assert under_base and all(p == "/container/c1" or p.startswith("/container/c1/")
                              for p in under_base), under_base
    in_state = [p for p in seen if p.startswith("/run/mirrormount/")]
    assert in_state == ["/run/mirrormount/c1/ns/mnt"], in_state
    assert "/srv/h" in seen and "/" in seen
