"""Shared subscriptions with paho-mqtt (MQTT 5) across two adapters: each message to exactly
one member, members on both adapters get messages, and a member that leaves with
unacknowledged messages has them redelivered to the others.

Usage: mqtt_shared_check.py PORT_A PORT_B COUNT BLOCK
Members: "slow" on B (receive maximum 10, receives but never acknowledges, then disconnects),
"fast" and "other" on A (acknowledge everything). A publisher on B sends COUNT QoS 1 messages.
Adapters take the stream by blocks of BLOCK offsets, at most two at once, and a block is only
finished when everything in it is acknowledged: so B, whose only member never acknowledges,
holds at most 2 * BLOCK messages (those slow has, and those waiting for room in slow), and A's
members must get every other message while slow still holds its own. Prints one JSON line: what
each member received; exits 1 if a message was lost, an acknowledging member got one twice, A's
members did not get the rest while slow held its share, or slow got none.
"""
import json
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

import paho_share

port_a, port_b, count, block = (int(a) for a in sys.argv[1:5])
run = uuid.uuid4().hex[:6]
topic = f"jobs-{run}"
share = f"$share/workers-{run}/{topic}/#"
lock = threading.Lock()
got = {"slow": [], "fast": [], "other": []}


def member(name, port, manual_ack):
    def on_payload(text):
        with lock:
            got[name].append(text)

    return paho_share.member(f"{name}-{run}", port, share, 10, manual_ack, on_payload)


slow = member("slow", port_b, manual_ack=True)
fast = member("fast", port_a, manual_ack=False)
other = member("other", port_a, manual_ack=False)
time.sleep(1.0)

pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{run}", protocol=mqtt.MQTTv5)
pub.connect("127.0.0.1", port_b)
pub.loop_start()
for i in range(count):
    pub.publish(f"{topic}/{i % 7}", f"m{i}", qos=1).wait_for_publish(10)

# Every message not held back on B reaches a member while slow still holds what it got.
deadline = time.time() + 30
while time.time() < deadline:
    with lock:
        n = len(set(got["fast"]) | set(got["other"]) | set(got["slow"]))
    if n >= count - 2 * block + len(got["slow"]):
        break
    time.sleep(0.1)
time.sleep(0.5)
with lock:
    slow_held = list(got["slow"])
    before_leave = len(set(got["fast"]) | set(got["other"]) | set(slow_held))
slow.disconnect()
slow.loop_stop()

deadline = time.time() + 30
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
result["delivered_while_slow_held"] = before_leave
result["slow_redelivered"] = sum(1 for m in slow_held if m in set(acked))
result["lost"] = sorted(want - set(acked))[:5]
result["duplicates"] = len(acked) - len(set(acked))
print(json.dumps(result), flush=True)
for c in (fast, other, pub):
    c.disconnect()
    c.loop_stop()
ok = (not result["lost"] and result["duplicates"] == 0 and 0 < result["slow"] <= 2 * block
      and before_leave >= count - 2 * block and result["slow_redelivered"] == result["slow"])
sys.exit(0 if ok else 1)
