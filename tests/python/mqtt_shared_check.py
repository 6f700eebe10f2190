"""Shared subscriptions with paho-mqtt (MQTT 5): each message to exactly one member, and a
member that leaves with unacknowledged messages has them redelivered to the others.

Usage: mqtt_shared_check.py PORT_A PORT_B COUNT
Members: "slow" on A (receives but never acknowledges, then disconnects), "fast" on A and
"other" on B (acknowledge everything). A publisher on B sends COUNT QoS 1 messages.
Prints one JSON line: what each member received; exits 1 if a message was lost or an
acknowledging member got one twice.
"""
import json
import queue
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

port_a, port_b, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
run = uuid.uuid4().hex[:6]
topic = f"jobs-{run}"
share = f"$share/workers-{run}/{topic}/#"
lock = threading.Lock()
got = {"slow": [], "fast": [], "other": []}


def member(name, port, manual_ack):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{run}",
                    protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    ready = queue.Queue()
    c.on_subscribe = lambda *a: ready.put(1)

    def on_message(client, userdata, msg):
        with lock:
            got[name].append(msg.payload.decode())

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(share, options=SubscribeOptions(qos=1))
    ready.get(timeout=10)
    return c


slow = member("slow", port_a, manual_ack=True)
fast = member("fast", port_a, manual_ack=False)
other = member("other", port_b, manual_ack=False)
time.sleep(1.0)

pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{run}", protocol=mqtt.MQTTv5)
pub.connect("127.0.0.1", port_b)
pub.loop_start()
for i in range(count):
    pub.publish(f"{topic}/{i % 7}", f"m{i}", qos=1).wait_for_publish(10)

# Let deliveries settle, then the slow member leaves without acknowledging what it holds.
deadline = time.time() + 20
while time.time() < deadline:
    with lock:
        n = len(set(got["fast"]) | set(got["other"]) | set(got["slow"]))
    if n >= count:
        break
    time.sleep(0.1)
time.sleep(0.5)
slow_held = list(got["slow"])
slow.disconnect()
slow.loop_stop()

deadline = time.time() + 20
want = {f"m{i}" for i in range(count)}
while time.time() < deadline:
    with lock:
        acked = set(got["fast"]) | set(got["other"])
    if acked >= want:
        break
    time.sleep(0.1)
with lock:
    result = {k: len(v) for k, v in got.items()}
    acked = got["fast"] + got["other"]
result["slow_redelivered"] = sum(1 for m in slow_held if m in set(acked))
result["lost"] = sorted(want - set(acked))[:5]
result["duplicates"] = len(acked) - len(set(acked))
print(json.dumps(result), flush=True)
for c in (fast, other, pub):
    c.disconnect()
    c.loop_stop()
sys.exit(0 if not result["lost"] and result["duplicates"] == 0 and result["slow"] > 0 else 1)
