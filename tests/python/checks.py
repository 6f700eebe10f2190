"""What the Python scenario scripts share: how a check fails.

Every script prints one line per passing check ("ok <name>") and exits 0 when all pass; on the
first failure it prints "FAIL" with what was expected and what came, and exits 1. The Rust
tests count the "ok" lines (`wharf_tests::ok_lines`), so a skipped check shows.
"""
import sys


def fail(msg):
    print(f"FAIL {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def ok(what):
    print(f"ok {what}", flush=True)
