"""Resources applied through the management API take effect live, with real clients.

Usage: api_live_access.py HTTP MQTT AMQP ADMIN_TOKEN

Against one `wharf up` (started with --admin-token):
1. Without credentials the API answers 401; with the admin token, a Plan, a Tenant `acme` on
   it, a User `alice` in `acme` (plain password, hashed by the API) allowed to send to and
   receive from `sensors` and `sensors/*`, and a topic Address `sensors` claiming `sensors/#`
   are created; each turns Ready. A bad Address is refused with 400 naming the field.
2. alice, in tenant acme (served without a restart), publishes with Paho (MQTT 5) and
   receives with Qpid Proton from `sensors` and with Paho from `sensors/#`; `orders` is refused
   (PUBACK 0x87, SUBACK 0x87, AMQP attach amqp:unauthorized-access).
3. alice's send permission is removed (PUT): the next publish gets PUBACK 0x87 and an AMQP
   sender attach is refused with amqp:unauthorized-access — within a few seconds, without
   reconnecting.
4. Her receive permission is removed: the Paho subscriber is disconnected with 0x87 and the
   Proton receiver detached with amqp:unauthorized-access.
5. /metrics parses as OpenMetrics; the counters moved with the messages.
   An address's ttl expires a queue's messages to its dead-letter address (step 2b).
6. The tenant's limits (its own over its plan's) take effect live: a message over
   max_message_bytes gets PUBACK 0x97 and an AMQP rejection; with max_storage_bytes below what
   its log holds, every message does, until the limit is raised.
7. The tenant is deleted: alice's connected MQTT client gets DISCONNECT 0x87 and her AMQP
   connection is closed (amqp:connection:forced); she can no longer connect.
"""

import base64
import json
import queue
import sys
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from proton import Disposition, Message
from proton.utils import BlockingConnection, LinkDetached, SendException

http, mqtt_port, amqp_port = (int(a) for a in sys.argv[1:4])
TOKEN = sys.argv[4]
BASE = f"http://127.0.0.1:{http}"


def call(method, path, body=None, token=TOKEN):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip().startswith("{") else text)
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if text.startswith("{") else text)


def wait_ready(path, timeout=20):
    deadline = time.time() + timeout
    while True:
        code, body = call("GET", path)
        assert code == 200, f"GET {path}: {code} {body}"
        if body["status"]["phase"] == "Ready":
            return body
        assert time.time() < deadline, f"{path} not Ready: {body['status']}"
        time.sleep(0.3)


def user(permissions):
    return {"spec": {"tenant": "acme", "password": "pw", "permissions": permissions}}


# 1. Resources.
code, body = call("GET", "/api/v1/plans", token=None)
assert code == 401, f"no credentials: {code} {body}"
code, body = call("GET", "/api/v1/plans", token="wrong")
assert code == 401, f"wrong token: {code} {body}"
for path, resource in [
    ("/api/v1/plans/small", {"spec": {"limits": {"max_connections": 100}, "credit": 0.1}}),
    ("/api/v1/tenants/acme", {"spec": {"plan": "small"}}),
    ("/api/v1/users/alice", user([{"addresses": ["sensors", "sensors/*"], "actions": ["send", "receive"]}])),
    ("/api/v1/tenants/acme/addresses/sensors", {"spec": {"type": "topic", "mqtt_topics": ["sensors/#"]}}),
]:
    code, body = call("PUT", path, resource)
    assert code == 201, f"PUT {path}: {code} {body}"
    assert body["metadata"]["generation"] == 1, body
for path in ["/api/v1/plans/small", "/api/v1/tenants/acme", "/api/v1/users/alice",
             "/api/v1/tenants/acme/addresses/sensors"]:
    wait_ready(path)
code, body = call("GET", "/api/v1/users/alice")
assert body["spec"]["password_hash"].startswith("$argon2id$") and "password" not in body["spec"], body
code, body = call("PUT", "/api/v1/tenants/acme/addresses/bad", {"spec": {"max_delivery": 0}})
assert code == 400 and body["field"] == "spec.max_delivery", f"{code} {body}"
print("ok resources Ready; bad one refused naming spec.max_delivery")


class Mqtt:
    def __init__(self, client_id):
        self.got = queue.Queue()
        self.subacks = queue.Queue()
        self.pubacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set("alice", "pw")
        self.c.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload).decode()))
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put([int(x.value) for x in codes])
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.put(int(rc.value))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(int(rc.value))
        connacks = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, p: connacks.put(int(rc.value))
        self.c.connect("127.0.0.1", mqtt_port, properties=Properties(PacketTypes.CONNECT))
        self.c.loop_start()
        rc = connacks.get(timeout=10)
        assert rc == 0, f"CONNACK {rc}"

    def subscribe(self, f):
        self.c.subscribe(f, qos=1)
        return self.subacks.get(timeout=10)

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1)
        return self.pubacks.get(timeout=10)


def amqp():
    return BlockingConnection(
        f"amqp://127.0.0.1:{amqp_port}", timeout=10, user="alice", password="pw", allowed_mechs="PLAIN"
    )


def refused(attach):
    try:
        attach()
    except Exception as e:  # proton raises LinkDetached / LinkException with the condition
        return str(e)
    return None


# 2. Messaging as alice in acme.
sub = Mqtt("alice-sub")
assert sub.subscribe("sensors/#") == [1], "SUBACK sensors/#"
assert sub.subscribe("orders") == [0x87], "SUBACK orders"
conn = amqp()
receiver = conn.create_receiver("sensors")
why = refused(lambda: conn.create_receiver("orders"))
assert why and "unauthorized-access" in why, f"AMQP receiver on orders: {why}"
pub = Mqtt("alice-pub")
assert pub.publish("sensors/1", "one") == 0, "PUBACK sensors/1"
assert pub.publish("orders", "no") == 0x87, "PUBACK orders"
assert sub.got.get(timeout=10) == ("sensors/1", "one")
m = receiver.receive(timeout=10)
assert m.body in ("one", b"one"), m.body
receiver.accept()
sender_conn = amqp()
sender = sender_conn.create_sender("sensors")
sender.send(Message(body="two", subject="sensors/2"))
print("ok alice publishes with Paho and Proton, receives with both; orders refused")

# 2b. An address's ttl: a queue's messages without their own TTL expire after it and go to
# its dead-letter address (anonymous client, default tenant).
code, body = call("PUT", "/api/v1/tenants/default/addresses/short",
                  {"spec": {"type": "queue", "ttl": "1s", "dead_letter": "short.dlq"}})
assert code == 201, f"{code} {body}"
wait_ready("/api/v1/tenants/default/addresses/short")
anon = BlockingConnection(f"amqp://127.0.0.1:{amqp_port}", timeout=10)
short = anon.create_sender("short")
for i in range(3):
    short.send(Message(body=f"old-{i}"))
time.sleep(2.5)
late = anon.create_receiver("short", credit=10)
try:
    m = late.receive(timeout=2)
    raise AssertionError(f"an expired message was delivered: {m.body}")
except AssertionError:
    raise
except Exception:  # Timeout: nothing left to deliver
    pass
dlq = anon.create_receiver("short.dlq", credit=10)
dead = sorted(dlq.receive(timeout=10).body for _ in range(3))
dlq.accept()
assert dead == ["old-0", "old-1", "old-2"], dead
short.send(Message(body="fresh"))
assert late.receive(timeout=10).body == "fresh"
late.accept()
anon.close()
print("ok address ttl 1s: 3 messages expired to short.dlq, a fresh one delivered")

# 3. Send taken away: the next publish is refused, an AMQP sender attach too.
call("PUT", "/api/v1/users/alice", user([{"addresses": ["sensors", "sensors/*"], "actions": ["receive"]}]))
accepted = 1  # "one" above; each accepted publish is counted in the metrics below
deadline = time.time() + 10
while True:
    rc = pub.publish("sensors/1", "after")
    if rc == 0x87:
        break
    accepted += 1
    assert time.time() < deadline, f"publish still accepted ({rc}) 10 s after the send permission went"
    time.sleep(0.3)
took = 10 - (deadline - time.time())
why = refused(lambda: amqp().create_sender("sensors"))
assert why and "unauthorized-access" in why, f"AMQP sender after removal: {why}"
print(f"ok send permission removed: PUBACK 0x87 after {took:.1f} s, AMQP attach unauthorized-access")

# 4. Receive taken away: the subscriber is disconnected with 0x87, the receiver detached.
call("PUT", "/api/v1/users/alice", user([{"addresses": ["nothing"], "actions": ["receive"]}]))
rc = sub.disconnects.get(timeout=10)
assert rc == 0x87, f"DISCONNECT {rc:#x}"
try:
    receiver.receive(timeout=10)
    raise AssertionError("the receiver was not detached")
except LinkDetached as e:
    assert "unauthorized-access" in str(e), str(e)
except Exception as e:  # a timeout would say the link lived on
    assert "unauthorized-access" in str(e), f"receiver: {type(e).__name__}: {e}"
print("ok receive permission removed: DISCONNECT 0x87, AMQP link detached unauthorized-access")

# 5. Metrics.
with urllib.request.urlopen(BASE + "/metrics", timeout=10) as r:
    text = r.read().decode()
samples = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
received = samples.get(("wharf_messages_received_total", (("protocol", "mqtt"), ("tenant", "acme"))), 0)
delivered = samples.get(("wharf_messages_delivered_total", (("protocol", "amqp"), ("tenant", "acme"))), 0)
records = samples.get(("wharf_stream_records_total", (("stream", "sensors"), ("tenant", "acme"))), 0)
# Refused publishes never reach the log, and are not counted as received.
assert received == accepted, f"mqtt received in acme: {received}, accepted {accepted}"
assert delivered >= 1, f"amqp delivered in acme: {delivered}"
assert records == accepted + 1, f"records of acme's sensors stream: {records} (+1 from AMQP)"
assert any(k[0] == "wharf_store_requests_total" and v > 0 for k, v in samples.items())
print(f"ok metrics: mqtt received {received:.0f}, amqp delivered {delivered:.0f}, sensors records {records:.0f}")

# 6. Limits: the tenant's own over its plan's, live.
call("PUT", "/api/v1/users/alice", user([{"addresses": ["sensors", "sensors/*"], "actions": ["send", "receive"]}]))
call("PUT", "/api/v1/tenants/acme", {"spec": {"plan": "small", "limits": {"max_message_bytes": 10}}})


def until(what, check, timeout=10):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.3)


until("a small publish accepted again", lambda: pub.publish("sensors/1", "small") == 0)
until("a 20-byte publish refused with 0x97", lambda: pub.publish("sensors/1", "x" * 20) == 0x97)
sender_conn = amqp()
sender = sender_conn.create_sender("sensors")
try:
    sender.send(Message(body="y" * 200))
    raise AssertionError("a 200-byte AMQP message was accepted")
except AssertionError:
    raise
except SendException as e:  # the transfer was rejected (amqp:link:message-size-exceeded)
    assert e.state == Disposition.REJECTED, f"{type(e).__name__}: {e}"
sender_conn.close()
call("PUT", "/api/v1/tenants/acme", {"spec": {"plan": "small", "limits": {"max_storage_bytes": 1}}})
until("a publish refused while storage is over its limit",
      lambda: pub.publish("sensors/1", "s") == 0x97)
call("PUT", "/api/v1/tenants/acme", {"spec": {"plan": "small"}})
until("publishes accepted once the limit is gone", lambda: pub.publish("sensors/1", "x" * 20) == 0)
print("ok limits: 0x97 over max_message_bytes (AMQP rejected), 0x97 while storage is full, lifted live")

# 7. The tenant goes: its clients are disconnected with a reason, new ones refused.
watcher = Mqtt("alice-watch")
amqp_conn = amqp()
code, _ = call("DELETE", "/api/v1/tenants/acme")
assert code == 204, code
rc = watcher.disconnects.get(timeout=15)
assert rc == 0x87, f"DISCONNECT after the tenant went: {rc:#x}"
try:
    amqp_conn.create_receiver("sensors")
    raise AssertionError("the AMQP connection lived on")
except AssertionError:
    raise
except Exception as e:
    assert "forced" in str(e) or "closed" in str(e).lower(), f"{type(e).__name__}: {e}"
try:
    Mqtt("alice-again")
    raise AssertionError("connected to a deleted tenant")
except AssertionError as e:
    assert "CONNACK" in str(e), str(e)
print("ok tenant deleted: DISCONNECT 0x87, AMQP connection closed, new connections refused")
for c in (pub, sub, watcher):
    c.c.loop_stop()
