"""Tenants are isolated (Paho and Qpid Proton against two adapters on one store).

Usage: tenants_isolated.py MQTT_A AMQP_A MQTT_B AMQP_B

The users file (tests/tests/mqtt.rs writes it) puts `alice` in tenant `acme` and `bob` in
tenant `globex`, password `pw`; anonymous clients are in the default tenant. Both `acme` and
`globex` declare an address `orders` claiming `orders/#`.

1. Three MQTT 5 clients with the same client id `dev` (alice, bob, anonymous) subscribe on B to
   `sensors/#` and `orders/#`; none takes another's session over.
2. The same topics published on A by each (and by bob over AMQP to `/topic/sensors/amqp`)
   reach only subscribers of the publisher's tenant; alice's AMQP receiver on B gets only
   acme's.
3. A retained message is served only in its tenant.
4. alice's persistent session moves to A and gets only what acme published meanwhile.
"""

import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from proton import Message
from proton.utils import BlockingConnection

mqtt_a, amqp_a, mqtt_b, amqp_b = (int(a) for a in sys.argv[1:5])
PASSWORD = "pw"


class Client:
    def __init__(self, port, user, client_id="dev", clean=True, expiry=0):
        self.got = queue.Queue()
        self.subacks = queue.Queue()
        self.disconnects = []
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if user:
            self.c.username_pw_set(user, PASSWORD)
        self.c.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload).decode()))
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(str(rc))
        connacks = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, p: connacks.put((flags.session_present, str(rc)))
        props = Properties(PacketTypes.CONNECT)
        if expiry:
            props.SessionExpiryInterval = expiry
        self.c.connect("127.0.0.1", port, clean_start=clean, properties=props)
        self.c.loop_start()
        self.session_present, rc = connacks.get(timeout=10)
        assert rc == "Success", f"{user}: CONNACK {rc}"

    def subscribe(self, *filters):
        for f in filters:
            self.c.subscribe(f, qos=1)
            codes = self.subacks.get(timeout=10)
            assert [int(c.value) for c in codes] == [1], f"SUBACK {codes}"

    def publish(self, topic, payload, retain=False):
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def drain(self, n, what):
        out = [self.got.get(timeout=15) for _ in range(n)]
        time.sleep(1.0)
        assert self.got.empty(), f"{what}: more than {n}: {out} + {list(self.got.queue)}"
        return sorted(out)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def amqp(port, user):
    return BlockingConnection(
        f"amqp://127.0.0.1:{port}", timeout=15, user=user, password=PASSWORD, allowed_mechs="PLAIN"
    )


# 1. Same client id in three tenants, on B.
subs = {who: Client(mqtt_b, user, expiry=300 if who == "acme" else 0)
        for who, user in [("acme", "alice"), ("globex", "bob"), ("default", None)]}
for s in subs.values():
    s.subscribe("sensors/#", "orders/#")
alice_amqp = amqp(amqp_b, "alice")
alice_receiver = alice_amqp.create_receiver("/topic/sensors/#", credit=10)
time.sleep(0.5)
print("ok same client id in three tenants", flush=True)

# 2. Publishes on A reach their tenant only.
pubs = {who: Client(mqtt_a, user, client_id=f"pub-{who}")
        for who, user in [("acme", "alice"), ("globex", "bob"), ("default", None)]}
pubs["acme"].publish("sensors/t", "acme-1", retain=True)
pubs["acme"].publish("orders/1", "acme-order")
pubs["globex"].publish("sensors/t", "globex-1")
pubs["globex"].publish("orders/2", "globex-order")
pubs["default"].publish("sensors/t", "default-1")
bob_amqp = amqp(amqp_a, "bob")
bob_amqp.create_sender("/topic/sensors/amqp").send(Message(body=b"globex-amqp"))
bob_amqp.close()
assert subs["acme"].drain(2, "acme") == [("orders/1", "acme-order"), ("sensors/t", "acme-1")]
assert subs["globex"].drain(3, "globex") == [
    ("orders/2", "globex-order"), ("sensors/amqp", "globex-amqp"), ("sensors/t", "globex-1")]
assert subs["default"].drain(1, "default") == [("sensors/t", "default-1")]
m = alice_receiver.receive(timeout=15)
alice_receiver.accept()
assert (m.subject, bytes(m.body).decode()) == ("sensors/t", "acme-1"), m
try:
    extra = alice_receiver.receive(timeout=1.5)
    raise AssertionError(f"acme's AMQP receiver got another tenant's message: {extra}")
except AssertionError:
    raise
except Exception:  # proton's Timeout: nothing else came
    pass
alice_amqp.close()
for who, s in subs.items():
    assert not s.disconnects, f"{who} was disconnected: {s.disconnects}"
print("ok publishes reach their tenant only", flush=True)

# 3. Retained messages per tenant.
late = {who: Client(mqtt_a, user, client_id="late")
        for who, user in [("acme", "alice"), ("globex", "bob"), ("default", None)]}
for s in late.values():
    s.subscribe("sensors/#")
assert late["acme"].drain(1, "acme retained") == [("sensors/t", "acme-1")]
for who in ("globex", "default"):
    time.sleep(0.5)
    assert late[who].got.empty(), f"{who} got acme's retained message: {list(late[who].got.queue)}"
print("ok retained messages stay in their tenant", flush=True)

# 4. alice's session moves to A; it missed one message of acme (and one of globex).
subs["acme"].stop()
time.sleep(0.5)
pubs["globex"].publish("sensors/t", "globex-2")
pubs["acme"].publish("sensors/t", "acme-2")
back = Client(mqtt_a, "alice", clean=False, expiry=300)
assert back.session_present, "alice's session is present on A"
assert back.drain(1, "alice resumed") == [("sensors/t", "acme-2")]
print("ok a persistent session resumes in its tenant", flush=True)
for c in [back, *pubs.values(), *late.values(), subs["globex"], subs["default"]]:
    c.stop()
