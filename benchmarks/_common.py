"""What the benchmark scripts share (they run as `python benchmarks/NAME.py`, so this folder
is on `sys.path`)."""

from __future__ import annotations


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM). Not `ru_maxrss`: Linux carries that over from
    the parent through fork + exec, so a worker would report its parent's peak."""
    return _status("VmHWM")


def rss_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    return _status("VmRSS")
