"""Many adapters on one store, one shared port per protocol, each killed with -9 in turn.

Usage: four_adapters_kill9.py MQTT_PORT AMQP_PORT SECONDS

While the test harness kills and restarts the adapters behind the shared ports (SO_REUSEPORT),
for SECONDS:
- 4 Paho MQTT 5 publishers send QoS 1 messages `p<k>:<n>` to `e2e-<run>/p<k>`, reconnecting
  whenever their adapter dies (each PUBACK is an acknowledged message);
- 2 Qpid Proton senders send `a<k>:<n>` to the topic address `/topic/e2e-<run>/a<k>`,
  reconnecting likewise (each accepted, settled transfer is acknowledged);
- one Paho subscriber with a persistent session (`e2e-<run>/#`, QoS 1) receives, resuming its
  session on another adapter whenever its own dies.
Then it waits until the subscriber has every acknowledged message and checks that each
publisher's messages first arrived in the order they were sent. Prints one `ok` line.
"""

import os
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from proton import Message
from proton.utils import BlockingConnection

mqtt_port, amqp_port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
run = str(os.getpid())
lock = threading.Lock()
acked = {}  # publisher -> set of n
received = []  # (publisher, n) in arrival order
stop = threading.Event()


def ack(who, n):
    with lock:
        acked.setdefault(who, set()).add(n)


def subscriber():
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code == 0:
            if not flags.session_present:
                client.subscribe(f"e2e-{run}/#", qos=1)
            connected.set()

    def on_message(client, userdata, m):
        who, n = m.payload.decode().split(":")
        with lock:
            received.append((who, int(n)))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"e2e-sub-{run}", protocol=mqtt.MQTTv5)
    c.on_connect = on_connect
    c.on_message = on_message
    c.reconnect_delay_set(0.05, 0.5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    c.connect("127.0.0.1", mqtt_port, clean_start=False, properties=props, keepalive=5)
    c.loop_start()
    assert connected.wait(30), "subscriber connected"
    return c


def mqtt_publisher(k):
    """Publish until stopped. A lost connection is replaced by a new client: Paho re-sends
    the in-flight messages of a reconnecting client after queued new ones (seen here: 575,
    576, 577, then 536 again), which is the client reordering, not the broker; a new client
    abandons them instead (unacknowledged, so nothing is promised for them)."""
    who = f"p{k}"
    n = 0
    while not stop.is_set():
        mids = {}
        early = {}
        lost = threading.Event()

        def on_publish(client, userdata, mid, reason_code, properties, mids=mids, early=early):
            with lock:
                m = mids.pop(mid, None)
                if m is None:
                    early[mid] = True
                    return
            if not reason_code.is_failure:
                ack(who, m)

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"e2e-{who}-{run}", protocol=mqtt.MQTTv5)
        c.on_publish = on_publish
        c.on_disconnect = lambda *a, lost=lost: lost.set()
        c.max_inflight_messages_set(20)
        try:
            c.connect("127.0.0.1", mqtt_port, keepalive=5)
        except OSError:
            time.sleep(0.05)
            continue
        c.loop_start()
        while not stop.is_set() and not lost.is_set():
            info = c.publish(f"e2e-{run}/{who}", f"{who}:{n}", qos=1)
            with lock:
                if early.pop(info.mid, None):
                    ack(who, n)
                else:
                    mids[info.mid] = n
            n += 1
            time.sleep(0.004)
        if stop.is_set():
            time.sleep(2)  # let the last PUBACKs arrive
        c.loop_stop()
        c.disconnect()


def amqp_sender(k):
    who = f"a{k}"
    n = 0
    while not stop.is_set():
        try:
            conn = BlockingConnection(f"amqp://127.0.0.1:{amqp_port}", timeout=5)
            snd = conn.create_sender(f"/topic/e2e-{run}/{who}")
            while not stop.is_set():
                # Blocks until the adapter settles it (accepted, i.e. stored), or raises.
                snd.send(Message(body=f"{who}:{n}"))
                ack(who, n)
                n += 1
            conn.close()
        except Exception:
            # The adapter died under us: the message in flight is unacknowledged; go on.
            n += 1
            time.sleep(0.05)


sub = subscriber()
threads = [threading.Thread(target=mqtt_publisher, args=(k,)) for k in range(4)]
threads += [threading.Thread(target=amqp_sender, args=(k,)) for k in range(2)]
for t in threads:
    t.start()
print("ready", flush=True)
time.sleep(seconds)
stop.set()
for t in threads:
    t.join(60)

deadline = time.time() + 90
while True:
    with lock:
        have = set(received)
        missing = [(w, n) for w, ns in acked.items() for n in ns if (w, n) not in have]
    if not missing or time.time() > deadline:
        break
    time.sleep(0.2)
sub.loop_stop()
sub.disconnect()

total = sum(len(ns) for ns in acked.values())
assert total > 200, f"only {total} acknowledged"
assert not missing, f"{len(missing)} of {total} acknowledged messages never delivered, e.g. {sorted(missing)[:10]}"
# Per publisher, acknowledged messages first arrive in the order they were sent (a message
# may arrive twice after a kill: QoS 1 redelivery, or a resend whose first attempt was stored;
# one never acknowledged may arrive anywhere, or not at all: nothing was promised for it).
first = {}
for w, n in received:
    if n not in acked.get(w, ()):
        continue
    first.setdefault(w, [])
    if n not in first[w]:
        first[w].append(n)
for w, ns in first.items():
    bad = [(a, b) for a, b in zip(ns, ns[1:]) if b < a]
    assert not bad, f"{w}: out of order, e.g. {bad[:5]}"
dups = len(received) - len(set(received))
mq = sum(len(v) for w, v in acked.items() if w.startswith("p"))
aq = sum(len(v) for w, v in acked.items() if w.startswith("a"))
print(f"ok four adapters: {mq} MQTT and {aq} AMQP messages acknowledged, all delivered in order ({dups} redelivered)", flush=True)
