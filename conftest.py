"""Shared by tests/ and vm-tests/: the signal dispositions every test's subprocesses start
with. A shell starts a background job (`make test &`, nohup, some CI runners) with SIGINT
and SIGQUIT ignored (and nohup SIGHUP too); Python keeps an ignored SIGINT ignored, and
every subprocess inherits it, so each test that sends Ctrl-C, SIGQUIT or SIGHUP to a
command would see it dropped by the kernel. The suite resets them once, at the start, to
what an interactive run has."""
from __future__ import annotations

import signal


def pytest_configure(config):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGQUIT, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
