"""Two adapters share a queue; one is killed with deliveries unsettled.

Usage: amqp_queue_failover.py PORT_A PORT_B PID_A N

Consumers on adapters A and B compete for N messages (adapters take blocks of the queue's
offsets by lease). A's consumer takes 50, accepts 20 and leaves 30 unsettled; B's consumer
accepts what it gets. A is killed with SIGKILL. Every message not accepted on A must then reach
the consumer on B, once, and none that A's consumer accepted. Prints the counts.
"""

import os
import signal
import sys
import time

from proton import Delivery, Message, Timeout
from proton.utils import BlockingConnection

port_a, port_b, pid_a, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
queue = f"failover-{os.getpid()}"

a = BlockingConnection(f"amqp://127.0.0.1:{port_a}", timeout=30)
ra = a.create_receiver(queue, credit=0, name="consumer-a")
ra.link.flow(50)
b = BlockingConnection(f"amqp://127.0.0.1:{port_b}", timeout=30)
rb = b.create_receiver(queue, credit=0, name="consumer-b")
rb.link.flow(100)
sender = b.create_sender(queue)
# Pipelined: all in flight at once, then wait until every one is accepted (stored). One at a
# time would wait for a store flush per message.
deliveries = []
for i in range(n):
    b.wait(lambda: sender.link.credit > 0, timeout=30, msg="credit to send")
    deliveries.append(sender.link.send(Message(body=i)))
b.wait(lambda: all(d.remote_state == Delivery.ACCEPTED for d in deliveries), timeout=60,
       msg="all sends accepted")

accepted_on_a, held_on_a = [], []
for i in range(50):
    m = ra.receive(timeout=30)
    if i < 20:
        ra.accept()
        accepted_on_a.append(m.body)
    else:
        held_on_a.append(m.body)
# Run A's connection until the acceptances are on the wire (Proton writes when it runs), then
# let them reach the store.
for _ in range(5):
    try:
        a.wait(lambda: False, timeout=0.1)
    except Timeout:
        pass
os.kill(pid_a, signal.SIGKILL)

got_b = []
deadline = time.time() + 60
want = n - len(accepted_on_a)
while len(got_b) < want and time.time() < deadline:
    try:
        m = rb.receive(timeout=1)
    except Exception:
        continue
    got_b.append(m.body)
    rb.accept()
# Anything more would be a duplicate: give it a moment to show up.
end = time.time() + 1.5
while time.time() < end:
    try:
        got_b.append(rb.receive(timeout=0.3).body)
        rb.accept()
    except Exception:
        pass

dups = len(got_b) - len(set(got_b))
again = sorted(set(got_b) & set(accepted_on_a))
missing = sorted(set(range(n)) - set(got_b) - set(accepted_on_a))
print(f"accepted on A {len(accepted_on_a)}, unsettled on A {len(held_on_a)}, delivered by B {len(got_b)}, "
      f"duplicates {dups}, accepted twice {len(again)}, missing {len(missing)}", flush=True)
assert not missing, f"missing {missing[:20]}"
assert not again, f"accepted on A and delivered again by B: {again[:20]}"
assert dups == 0, "B delivered a message twice"
assert set(held_on_a) <= set(got_b), "an unsettled message was lost"
b.close()
print("ok queue failover", flush=True)
