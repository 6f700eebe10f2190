"""A changed Address spec reaches a running adapter (Qpid Proton).

Usage: amqp_spec_change.py PORT before|after

`jobs` is a declared queue. `before`: no delivery limit — a message whose delivery failed
three times is still delivered. `after` (tests/tests/amqp.rs re-applied `jobs` with
max_delivery 1 and dead_letter `jobs.dlq` meanwhile): one failed delivery moves it to
`jobs.dlq`.
"""

import sys

from proton import Delivery, Message
from proton.utils import BlockingConnection

port, phase = sys.argv[1], sys.argv[2]
c = BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=15)
c.create_sender("jobs").send(Message(body=f"poison-{phase}"))
r = c.create_receiver("jobs", credit=0, name=f"jobs-{phase}")
attempts = 3 if phase == "before" else 1
for attempt in range(attempts):
    m = r.receive(timeout=15)
    assert (m.body, m.delivery_count) == (f"poison-{phase}", attempt), (m.body, m.delivery_count)
    r.fetcher.unsettled[0].local.failed = True
    r.settle(Delivery.MODIFIED)
if phase == "before":
    m = r.receive(timeout=15)
    assert m.delivery_count == 3, m.delivery_count
    r.accept()
    print("ok no delivery limit", flush=True)
else:
    dlq = c.create_receiver("jobs.dlq", credit=1)
    m = dlq.receive(timeout=15)
    assert m.body == "poison-after", m.body
    dlq.accept()
    print("ok new max_delivery and dead_letter applied", flush=True)
c.close()
