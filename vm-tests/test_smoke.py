def test_sandbox_root_is_tmpfs(sandbox):
    root = [f for f in sandbox.mountinfo() if f[4] == "/"][0]
    assert "tmpfs" in root
    shared = any(x.startswith("shared:") for x in root[6:root.index("-")])
    assert shared == (sandbox.propagation == "rshared")
