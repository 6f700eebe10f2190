"""SIGTERM of an adapter keeps what MQTT promises: the will of a client it disconnects is
published, and a persistent session's position is saved, so the client resumes on another
adapter with exactly what it had not acknowledged (paho-mqtt, MQTT 5).

Usage: mqtt_sigterm_session.py PORT_A PORT_B PID_A

"dev" (session expiry 300 s, will "offline" on status/<dev>) subscribes on A and acknowledges
m0..m4; "watcher" on B follows status/<dev>. A gets SIGTERM: dev must get DISCONNECT 0x8B and
watcher the will (at least once: the count is printed). m5..m9 are published on B; dev resumes its session on B (clean start 0) and
must get m5..m9 and none of m0..m4. Prints one JSON line; exits 1 otherwise.
"""
import json
import os
import queue
import signal
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

port_a, port_b, pid_a = (int(a) for a in sys.argv[1:4])
run = uuid.uuid4().hex[:6]
dev_id, topic, status = f"dev-{run}", f"jobs-{run}", f"status/dev-{run}"
lock = threading.Lock()
got = {"dev": [], "resumed": [], "watcher": []}
disconnect_codes = []


def client(name, client_id, port, clean_start=True, expiry=None, will=False):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    ready = queue.Queue()
    c.on_subscribe = lambda *a: ready.put("suback")
    c.on_connect = lambda *a: ready.put("connack")

    def on_message(cl, userdata, msg):
        with lock:
            got[name].append(msg.payload.decode())

    def on_disconnect(cl, userdata, flags, reason, props):
        with lock:
            disconnect_codes.append(reason.value if hasattr(reason, "value") else int(reason))

    c.on_message = on_message
    c.on_disconnect = on_disconnect
    if will:
        c.will_set(status, "offline", qos=1)
    props = Properties(PacketTypes.CONNECT)
    if expiry is not None:
        props.SessionExpiryInterval = expiry
    c.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
    c.loop_start()
    if ready.get(timeout=10) != "connack":
        sys.exit(f"{name}: no CONNACK")
    return c, ready


def subscribe(c, ready, filt):
    c.subscribe(filt, options=SubscribeOptions(qos=1))
    if ready.get(timeout=10) != "suback":
        sys.exit(f"no SUBACK for {filt}")


def wait_for(name, n, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with lock:
            if len(got[name]) >= n:
                return True
        time.sleep(0.05)
    return False


dev, dev_ready = client("dev", dev_id, port_a, clean_start=True, expiry=300, will=True)
subscribe(dev, dev_ready, f"{topic}/#")
watcher, watcher_ready = client("watcher", f"watcher-{run}", port_b)
subscribe(watcher, watcher_ready, status)
pub, _ = client("pub", f"pub-{run}", port_b)
for i in range(5):
    pub.publish(f"{topic}/x", f"m{i}", qos=1).wait_for_publish(10)
if not wait_for("dev", 5, 30):
    sys.exit(f"dev got {got['dev']} before the SIGTERM")
# dev's PUBACKs were sent after each message; a publish of its own acknowledged by A means A
# has read them (a connection's packets are handled in order).
dev.publish(f"other-{run}", "sync", qos=1).wait_for_publish(10)

os.kill(pid_a, signal.SIGTERM)
deadline = time.time() + 30
while time.time() < deadline and (not disconnect_codes or not got["watcher"]):
    time.sleep(0.05)
dev.loop_stop()
with lock:
    codes, will_seen = list(disconnect_codes), list(got["watcher"])

for i in range(5, 10):
    pub.publish(f"{topic}/x", f"m{i}", qos=1).wait_for_publish(10)
resumed, _ = client("resumed", dev_id, port_b, clean_start=False, expiry=300)
wait_for("resumed", 5, 30)
time.sleep(1.0)  # anything more (a redelivery of m0..m4) would show by now
with lock:
    again = list(got["resumed"])
    wills = list(got["watcher"])
print(json.dumps({"disconnect_codes": codes, "wills": wills, "resumed": again}))
resumed.disconnect()
for c in (watcher, pub, resumed):
    c.loop_stop()
if 139 not in codes:
    sys.exit(f"dev was not sent DISCONNECT 0x8B: {codes}")
if "offline" not in will_seen:
    sys.exit(f"the will was not published: {wills}")
if sorted(again, key=lambda m: int(m[1:])) != [f"m{i}" for i in range(5, 10)]:
    sys.exit(f"resumed session got {again}, wanted m5..m9 only")
print("ok sigterm kept the will and the session position")
