"""A durable topic subscription moves to another adapter and resumes where it left off.

Usage: amqp_durable_subscription.py PORT_A PORT_B

Container "durable-<pid>" subscribes durably (link name "sub", durable terminus, expiry never)
to a topic on adapter A, takes 3 messages, and goes away; 4 more are sent; it comes back on
adapter B with the same container-id and link name and gets exactly the 4 it missed. A
non-durable receiver that comes back gets none of them. Closing the durable link (not just
detaching it) ends the subscription.
"""

import os
import sys

from proton import Message
from proton.reactor import Container, DurableSubscription
from proton.utils import BlockingConnection

from proton_options import Caps

port_a, port_b = sys.argv[1], sys.argv[2]
topic = f"events-{os.getpid()}"
cid = f"durable-{os.getpid()}"


def connect(port, container_id=None):
    kw = {"container": Container(container_id=container_id)} if container_id else {}
    return BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=15, **kw)


def send(port, bodies):
    c = connect(port)
    s = c.create_sender(topic, options=Caps("topic"))
    for b in bodies:
        s.send(Message(body=b))
    c.close()


def take(receiver, n):
    got = []
    for _ in range(n):
        got.append(receiver.receive(timeout=10).body)
        receiver.accept()
    return got


a = connect(port_a, cid)
sub = a.create_receiver(topic, name="sub", credit=10, options=[DurableSubscription(), Caps("topic")])
plain = a.create_receiver(topic, name="plain", credit=10, options=Caps("topic"))
send(port_a, ["m1", "m2", "m3"])
assert take(sub, 3) == ["m1", "m2", "m3"]
assert take(plain, 3) == ["m1", "m2", "m3"]
sub.link.detach()  # detach, not close: the subscription stays
a.close()

send(port_b, ["m4", "m5", "m6", "m7"])

b = connect(port_b, cid)
sub = b.create_receiver(topic, name="sub", credit=10, options=[DurableSubscription(), Caps("topic")])
got = take(sub, 4)
assert got == ["m4", "m5", "m6", "m7"], got
plain = b.create_receiver(topic, name="plain", credit=10, options=Caps("topic"))
try:
    m = plain.receive(timeout=1)
    raise AssertionError(f"a non-durable receiver got {m.body} sent while it was away")
except AssertionError:
    raise
except Exception:
    pass
# Closing the durable link ends the subscription: sent afterwards, then re-attached, the
# subscription starts afresh (nothing from while it was gone).
sub.close()
send(port_b, ["m8"])
sub = b.create_receiver(topic, name="sub", credit=10, options=[DurableSubscription(), Caps("topic")])
try:
    m = sub.receive(timeout=1)
    raise AssertionError(f"a closed durable subscription kept {m.body}")
except AssertionError:
    raise
except Exception:
    pass
send(port_b, ["m9"])
assert take(sub, 1) == ["m9"]
b.close()
print("ok durable subscription resumed on another adapter: got", got, "; closing it ends it", flush=True)
