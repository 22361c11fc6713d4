"""joined_by from the reverse join index (guest/joinscan.py) on the real CLI: create and
destroy keep STATE/.joins in step, `status` answers from it (proved by a joiner's record
changed behind its back, which only a scan would notice), destroy of a joined guest is
still refused, and a STATE without the index (as an older mirrormount leaves it) gives the
same answers from the records until the next create rebuilds it. Each test in its own
sandbox, / private and rshared."""
from __future__ import annotations

import json

STATE = "/run/mirrormount"
PROBE = r"""
import json, sys
from mirrormount.guest.joinscan import index_true, joiners_indexed
from mirrormount.guest.model import Layout
lay = Layout()
print(json.dumps([index_true(lay), joiners_indexed(lay, sys.argv[1])]))
"""


SWITCHES = ("MIRRORMOUNT_NO_LISTMOUNT", "MIRRORMOUNT_NO_STATMOUNT", "MIRRORMOUNT_NO_UNIQUE_ID")


def _joined_by(sb, name):
    """status NAME's joined_by, the same on every path (listmount, mountinfo, no unique
    ids): the index does not depend on how the mount table is read."""
    r = sb.mm("--json", "status", name)
    assert r.returncode == 0, r.stderr
    for switch in SWITCHES:
        sb.env[switch] = "1"
        try:
            again = sb.mm("--json", "status", name)
        finally:
            del sb.env[switch]
        assert (again.returncode, again.json) == (0, r.json), switch
    return r.json["joined_by"]


def _index(sb, name):
    return json.loads(sb.run(["python3", "-c", PROBE, name], check=True).stdout)


def test_index_follows_create_and_destroy_and_old_state_still_answers(sandbox):
    sb = sandbox
    before = sb.mountpoints()
    sb.mm("create", "c1", "--ns", "net,uts", check=True, timeout=120)
    sb.mm("create", "g0", "g1", check=True, timeout=120)
    sb.mm("create", "j1", "--join", "net=c1", check=True, timeout=120)
    sb.mm("create", "j2", "--join", "uts=c1", "--join", "net=j1", check=True, timeout=120)
    assert _index(sb, "c1") == [True, [["j1", "net"], ["j2", "uts"]]]
    assert _index(sb, "j1") == [True, [["j2", "net"]]]
    assert _joined_by(sb, "c1") == {"j1": ["net"], "j2": ["uts"]}
    assert _joined_by(sb, "g0") == {}
    # status reads the index, not the records: j2's record rewritten without its joins (in
    # STATE/j2, so STATE's own stat is unchanged) does not change what c1 is joined by.
    rec = f"{STATE}/j2/guest.json"
    sb.sh(f"cp {rec} /tmp/j2.json && python3 -c \"import json; p='{rec}'; d=json.load(open(p));"
          " d['joins']={}; json.dump(d, open(p, 'w'), indent=2, sort_keys=True)\"")
    assert _joined_by(sb, "c1") == {"j1": ["net"], "j2": ["uts"]}
    sb.sh(f"cp /tmp/j2.json {rec}")
    # destroy of a joined guest is refused, whole batch too
    r = sb.mm("destroy", "c1", "--force")
    assert r.returncode == 3 and "j1 (net)" in r.stderr and "j2 (uts)" in r.stderr, r.stderr
    r = sb.mm("destroy", "j1")
    assert r.returncode == 3 and "j2 (net)" in r.stderr, r.stderr
    # A STATE as an older mirrormount leaves it: no index. Same answers, from the records.
    sb.sh(f"rm {STATE}/.joins/stamp {STATE}/.joins/by/c1 {STATE}/.joins/by/j1"
          f" && rmdir {STATE}/.joins/by {STATE}/.joins")
    assert _index(sb, "c1") == [False, None]
    assert _joined_by(sb, "c1") == {"j1": ["net"], "j2": ["uts"]}
    r = sb.mm("destroy", "c1")
    assert r.returncode == 3 and "j1 (net)" in r.stderr, r.stderr
    # The next change rebuilds it from the records.
    sb.mm("destroy", "g1", check=True, timeout=120)
    assert _index(sb, "c1") == [True, [["j1", "net"], ["j2", "uts"]]]
    assert _index(sb, "j1") == [True, [["j2", "net"]]]
    # The joiners go first; then c1 may go, and nothing of the index is left behind.
    sb.mm("destroy", "j2", check=True, timeout=120)
    assert _index(sb, "c1") == [True, [["j1", "net"]]] and _index(sb, "j1") == [True, []]
    assert _joined_by(sb, "c1") == {"j1": ["net"]}
    sb.mm("destroy", "j1", "c1", check=True, timeout=120)
    assert _index(sb, "c1") == [True, []]
    assert sb.sh(f"ls -A {STATE}/.joins/by").stdout == ""
    sb.mm("destroy", "g0", check=True, timeout=120)
    assert sb.mountpoints() == before
    assert sb.sh(f"ls -A {STATE} 2>/dev/null || true").stdout == ""
