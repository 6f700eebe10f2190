"""MQTT 5: a session resumed with Clean Start 0 and no Session Expiry Interval [MQTT-3.1.2-4,
3.1.2-23] — how Paho (and most MQTT 5 clients) reconnect by default.

Usage: mqtt5_resume_without_expiry.py HOST PORT
1. `dev` connects with Session Expiry 3600, subscribes at QoS 1, disconnects.
2. Another client publishes 3 messages at QoS 1.
3. `dev` connects with Clean Start 0 and no properties: session present 1, the 3 messages.
4. It disconnects: its session ends (its expiry is now 0). Connecting again the same way finds
   no session (session present 0) and gets nothing.
"""
import queue
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST, PORT = sys.argv[1], int(sys.argv[2])
RUN = uuid.uuid4().hex[:8]
TOPIC = f"resume/{RUN}"
CLIENT = f"dev-{RUN}"


def client(client_id, clean_start, props=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connack, messages, subacks = queue.Queue(), queue.Queue(), queue.Queue()
    c.on_connect = lambda c, u, flags, rc, p: connack.put((flags.session_present, rc))
    c.on_message = lambda c, u, m: messages.put(m)
    c.on_subscribe = lambda c, u, mid, rcs, p: subacks.put(rcs)
    c.connect(HOST, PORT, keepalive=30, clean_start=clean_start, properties=props)
    c.loop_start()
    present, rc = connack.get(timeout=10)
    assert not rc.is_failure, f"CONNACK {rc}"
    return c, present, messages, subacks


def bye(c):
    c.disconnect()
    c.loop_stop()


expiry = Properties(PacketTypes.CONNECT)
expiry.SessionExpiryInterval = 3600
c, present, _, subacks = client(CLIENT, True, expiry)
c.subscribe(TOPIC, qos=1)
subacks.get(timeout=10)
bye(c)

p, _, _, _ = client(f"pub-{RUN}", True)
for i in range(3):
    p.publish(TOPIC, f"m{i}", qos=1).wait_for_publish(timeout=10)
bye(p)

# Paho's default reconnect: Clean Start 0, no Session Expiry Interval property.
c, present, messages, _ = client(CLIENT, False)
assert present, "session present 0: the stored session was not resumed"
got = sorted(messages.get(timeout=10).payload.decode() for _ in range(3))
assert got == ["m0", "m1", "m2"], got
print("ok resumed with no Session Expiry Interval: session present 1, 3 queued messages")
bye(c)

c, present, messages, _ = client(CLIENT, False)
assert not present, "the session outlived a connection whose expiry was 0"
try:
    m = messages.get(timeout=1)
    raise AssertionError(f"unexpected message {m.payload!r}")
except queue.Empty:
    pass
bye(c)
print("ok the session ended with that connection: session present 0 next time")
