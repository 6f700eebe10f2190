"""A store outage seen by an AMQP sender: a message the store did not take is *released*
(AMQP 1.0 §3.4.5: not acted upon, send it again), not rejected, and the adapter lives on.

Usage: amqp_store_outage.py PORT STORE_SERVER_PID

Sends "before" (must be accepted: stored), kills the S3-compatible server the adapter writes
to, sends "during" and waits for its outcome, then checks that the adapter still takes
connections. Prints the outcome.
"""

import os
import signal
import sys

from proton import Delivery, Message
from proton.utils import BlockingConnection

port, store_pid = int(sys.argv[1]), int(sys.argv[2])
url = f"amqp://127.0.0.1:{port}"
queue = f"outage-{os.getpid()}"

conn = BlockingConnection(url, timeout=30)
sender = conn.create_sender(queue)
sender.send(Message(body="before"))  # raises unless accepted

os.kill(store_pid, signal.SIGKILL)
conn.wait(lambda: sender.link.credit > 0, timeout=30, msg="credit to send")
d = sender.link.send(Message(body="during"))
conn.wait(lambda: d.remote_state != 0, timeout=120, msg="an outcome for the send during the outage")
names = {Delivery.ACCEPTED: "accepted", Delivery.RELEASED: "released",
         Delivery.REJECTED: "rejected", Delivery.MODIFIED: "modified"}
outcome = names.get(d.remote_state, str(d.remote_state))
detail = ""
if d.remote_state == Delivery.REJECTED and d.remote.condition is not None:
    detail = f" {d.remote.condition.name}: {d.remote.condition.description}"
print(f"outcome during the outage: {outcome}{detail}")
if d.remote_state != Delivery.RELEASED:
    sys.exit(f"expected released, got {outcome}{detail}")
conn.close()

# The adapter lives on: it still opens connections and links.
again = BlockingConnection(url, timeout=30)
again.create_receiver(queue, credit=0)
again.close()
print("ok store outage: released")
