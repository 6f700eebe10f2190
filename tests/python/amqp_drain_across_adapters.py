"""Drain sends what is available first (AMQP 1.0 2.6.7), also when another adapter stored it.

Usage: amqp_drain_across_adapters.py URL_A URL_B
A Qpid Proton sender on adapter A, a receiver on adapter B (same store). The receiver takes 2
of the queue's messages with flow(2); 3 more are sent (each accepted, so stored); a drain
with credit 8 must then deliver those 3 and answer with a flow that uses up the rest of the
credit. Run with a long [log] poll_interval, so that B learns of A's messages only by looking
when the drain asks for them.
"""
import sys
import time
import uuid

from proton import Message
from proton.utils import BlockingConnection

URL_A, URL_B = sys.argv[1], sys.argv[2]
q = "drain-x-" + uuid.uuid4().hex[:8]

a = BlockingConnection(URL_A, timeout=20)
b = BlockingConnection(URL_B, timeout=20)
s = a.create_sender(q)
for i in range(2):
    s.send(Message(body=i))
r = b.create_receiver(q, credit=0)
r.link.flow(2)
first = []
for _ in range(2):
    first.append(r.receive(timeout=20).body)
    r.accept()
assert first == [0, 1], first
for i in range(2, 5):
    s.send(Message(body=i))  # returns once accepted: stored
started = time.time()
r.link.drain(8)
b.wait(lambda: not r.link.draining(), timeout=10, msg="drain")
answered = time.time() - started
# The drain answer comes after the 3 transfers; Proton may still be handing them over.
try:
    b.wait(lambda: r.fetcher.has_message >= 3, timeout=2, msg="the 3 messages of the drain")
except Exception:
    pass
got = [r.fetcher.pop().body for _ in range(r.fetcher.has_message)]
assert got == [2, 3, 4], f"drain delivered {got}, not the 3 stored messages [2, 3, 4]"
assert r.link.credit == 0, f"credit after the drain: {r.link.credit}"
for _ in got:
    r.accept()
a.close()
b.close()
print(f"ok drain across adapters: 3 stored on A delivered by B's drain, answered in {answered * 1000:.0f} ms")
