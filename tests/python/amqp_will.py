"""A will for AMQP clients: a message sent to `$will` (with `to` saying where it goes) is
published when the connection ends without the client's close, and not after a clean close
or once the client closed its `$will` link;
and when the adapter itself dies, by another adapter.

Usage: amqp_will.py PORT [PORT_B PID_A]   (the second form: PORT is adapter A, killed with
SIGKILL while the client is connected; adapter B, on the same store, publishes the will)
"""

import os
import subprocess
import sys

from proton import Delivery, Message
from proton.utils import BlockingConnection, SendException

port = sys.argv[1]
queue = f"alerts-{os.getpid()}"

if len(sys.argv) == 4:
    import signal
    import time
    port_b, pid_a = sys.argv[2], int(sys.argv[3])
    c = BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=10)
    c.create_sender("$will").send(Message(address=queue, body="will of a client of a dead adapter"))
    os.kill(pid_a, signal.SIGKILL)
    started = time.time()
    b = BlockingConnection(f"amqp://127.0.0.1:{port_b}", timeout=10)
    r = b.create_receiver(queue, credit=5)
    m = r.receive(timeout=30)
    r.accept()
    assert m.body == "will of a client of a dead adapter", m.body
    print(f"ok AMQP will published by another adapter {time.time() - started:.1f} s after kill -9", flush=True)
    sys.exit(0)

CHILD = """
import os, sys
from proton import Message
from proton.utils import BlockingConnection
port, queue, mode = sys.argv[1], sys.argv[2], sys.argv[3]
c = BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=10)
will = c.create_sender("$will")
will.send(Message(address=queue, body=f"will of the {mode} client"))
if mode == "withdrawing":
    will.close()  # closing the $will link withdraws the will
    c.create_sender(queue).send(Message(body="withdrawn"))  # the detach was handled before this
    os._exit(4)
if mode == "crashing":
    os._exit(3)  # no close frame: the socket just goes
c.close()
"""
# Each child must get as far as its mode says: the clean one closes (exit 0), the withdrawing
# one closes its `$will` link and then exits 4 without a close, the crashing one exits 3
# without a close. Anything else (it failed to connect or to set its will) fails here, not
# later as a missing or extra will.
for mode, code in (("clean", 0), ("withdrawing", 4), ("crashing", 3)):
    done = subprocess.run([sys.executable, "-c", CHILD, port, queue, mode], timeout=30)
    assert done.returncode == code, f"the {mode} client exited {done.returncode}, not {code}"

c = BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=10)
r = c.create_receiver(queue, credit=5)
got = []
for _ in range(2):
    got.append(r.receive(timeout=10).body)
    r.accept()
assert got == ["withdrawn", "will of the crashing client"], got
try:
    extra = r.receive(timeout=1)
    raise AssertionError(f"unexpected {extra.body}")
except AssertionError:
    raise
except Exception:
    pass
# A will must say where it goes.
try:
    c.create_sender("$will").send(Message(body="nowhere"))
    raise AssertionError("a will without `to` was accepted")
except SendException as e:
    assert e.state == Delivery.REJECTED, e.state
c.close()
print("ok AMQP will published after a crash, not after a clean close or a closed $will link", flush=True)
