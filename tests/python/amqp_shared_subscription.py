"""Shared durable subscriptions: the links of one subscription compete for the topic's
messages (each message to one of them), while another subscriber gets them all.

Usage: amqp_shared_subscription.py PORT_A PORT_B

Two connections to adapter A (different container-ids) attach `jobs|global` and `jobs|global2`
with capabilities shared + global + topic, durable, expiry never; 40 messages are sent through
adapter B. Together they get each exactly once, both get some; a plain receiver gets all 40.
(Links of one subscription on different adapters are served by one adapter at a time, as queue
consumers are.)
"""

import os
import sys
import time

from proton import Message
from proton.reactor import DurableSubscription
from proton.utils import BlockingConnection

from proton_options import Caps

port_a, port_b = sys.argv[1], sys.argv[2]
topic = f"jobs-{os.getpid()}"


shared = [DurableSubscription(), Caps("shared", "global", "topic")]
a = BlockingConnection(f"amqp://127.0.0.1:{port_a}", timeout=15)
a2 = BlockingConnection(f"amqp://127.0.0.1:{port_a}", timeout=15)
b = BlockingConnection(f"amqp://127.0.0.1:{port_b}", timeout=15)
# The attach is answered once the subscription's start (the topic's end) is stored: what is
# sent from now on reaches it.
ra = a.create_receiver(topic, name="jobs|global", credit=10, options=shared)
rb = a2.create_receiver(topic, name="jobs|global2", credit=10, options=shared)
everything = a.create_receiver(topic, name="audit", credit=50, options=Caps("topic"))
s = b.create_sender(topic, options=Caps("topic"))
for i in range(40):
    s.send(Message(body=i))

got_a, got_b = [], []
deadline = time.time() + 30
while len(got_a) + len(got_b) < 40 and time.time() < deadline:
    for r, got in ((ra, got_a), (rb, got_b)):
        try:
            got.append(r.receive(timeout=0.2).body)
            r.accept()
        except Exception:
            pass
all_of_them = []
for _ in range(40):
    all_of_them.append(everything.receive(timeout=10).body)
    everything.accept()
assert sorted(got_a + got_b) == list(range(40)), (got_a, got_b)
assert all_of_them == list(range(40)), all_of_them
assert got_a and got_b, f"one link got nothing: {len(got_a)} / {len(got_b)}"
a.close()
a2.close()
b.close()
print(f"ok shared durable subscription: {len(got_a)} + {len(got_b)} of 40, each once", flush=True)
