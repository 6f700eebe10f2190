"""A shared durable subscription survives the death of the adapter that started it.

Usage: amqp_shared_failover.py PORT_A PORT_B PID_A

A receiver attaches the shared global subscription `orders|global` on adapter A; "o0", sent
through adapter B, reaches it (so A serves the subscription); "o1".."o4" follow. The receiver
never accepts anything, so A never acknowledges, and A is killed (`kill -9`). A receiver of the
same subscription on adapter B must then get all five once A's block lease expires: the
subscription started before "o0" for every adapter, not at B's end when B came to serve it.
"""

import os
import signal
import sys

from proton import Message
from proton.reactor import DurableSubscription
from proton.utils import BlockingConnection

from proton_options import Caps

port_a, port_b, pid_a = sys.argv[1], sys.argv[2], int(sys.argv[3])
topic = f"orders-{os.getpid()}"


shared = [DurableSubscription(), Caps("shared", "global", "topic")]
a = BlockingConnection(f"amqp://127.0.0.1:{port_a}", timeout=20)
ra = a.create_receiver(topic, name="orders|global", credit=10, options=shared)
b = BlockingConnection(f"amqp://127.0.0.1:{port_b}", timeout=20)
sender = b.create_sender(topic, options=Caps("topic"))
sender.send(Message(body="o0"))
first = ra.receive(timeout=20).body  # A serves the subscription; nothing is accepted
if first != "o0":
    raise AssertionError(f"A's receiver got {first!r} first")
for i in range(1, 5):
    sender.send(Message(body=f"o{i}"))
os.kill(pid_a, signal.SIGKILL)

rb = b.create_receiver(topic, name="orders|global", credit=10, options=shared)
got = []
while len(set(got)) < 5:
    try:
        m = rb.receive(timeout=20)
    except Exception as e:
        raise AssertionError(f"B's receiver got {got} and then nothing for 20 s ({e!r})")
    got.append(m.body)
    rb.accept()
if sorted(set(got)) != [f"o{i}" for i in range(5)]:
    raise AssertionError(f"B's receiver got {got}")
b.close()
print(f"ok shared subscription failover: B got {got} after A was killed", flush=True)
