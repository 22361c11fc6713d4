"""`make demo`'s tour runs to the end (it builds its own sandbox, here nested in the test's)."""


def test_demo_tour_completes(sandbox):
    r = sandbox.mm("demo", timeout=120)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "the sandbox is gone" in r.stdout
