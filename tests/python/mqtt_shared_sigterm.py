"""A stopped adapter hands its shared-subscription blocks over at once (paho-mqtt, MQTT 5).

Usage: mqtt_shared_sigterm.py PORT_A PORT_B PID_A COUNT LEASE_SECONDS

Member "holder" on adapter A receives COUNT QoS 1 messages and acknowledges none (A holds the
block they are in); member "taker" joins on B; A gets SIGTERM. A's shutdown ends holder's
connection, commits and releases its blocks, so B takes them and taker gets all COUNT messages
well before A's leases (LEASE_SECONDS) would have expired. Prints one JSON line; exits 1 if
taker missed a message or got them only after half the lease time (they waited for expiry).
"""
import json
import os
import signal
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

import paho_share

port_a, port_b, pid_a, count, lease = (int(a) for a in sys.argv[1:6])
run = uuid.uuid4().hex[:6]
topic = f"jobs-{run}"
share = f"$share/workers-{run}/{topic}"
lock = threading.Lock()
got = {"holder": [], "taker": []}


def member(name, port, manual_ack):
    def on_payload(text):
        with lock:
            got[name].append(text)

    return paho_share.member(f"{name}-{run}", port, share, count, manual_ack, on_payload)


def wait_for(name, n, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with lock:
            if len(set(got[name])) >= n:
                return True
        time.sleep(0.05)
    return False


holder = member("holder", port_a, manual_ack=True)
pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{run}", protocol=mqtt.MQTTv5)
pub.connect("127.0.0.1", port_b)
pub.loop_start()
for i in range(count):
    pub.publish(topic, f"m{i}", qos=1).wait_for_publish(10)
if not wait_for("holder", count, 30):
    sys.exit(f"holder on A got {len(got['holder'])} of {count}")

taker = member("taker", port_b, manual_ack=False)
stopped = time.time()
os.kill(pid_a, signal.SIGTERM)
complete = wait_for("taker", count, lease * 2)
elapsed = time.time() - stopped
with lock:
    taken = sorted(set(got["taker"]), key=lambda m: int(m[1:]))
print(json.dumps({"holder": len(got["holder"]), "taker": len(taken),
                  "seconds_after_sigterm": round(elapsed, 2), "lease_seconds": lease}))
if not complete:
    sys.exit(f"taker got {len(taken)} of {count}")
if elapsed > lease / 2:
    sys.exit(f"taker got them {elapsed:.1f} s after SIGTERM: A's blocks were not released")
for c in (taker, pub):
    c.disconnect()
    c.loop_stop()
print("ok shared subscription handed over at shutdown")
