"""Configured addresses claim MQTT topics (Paho and Qpid Proton against two adapters).

Usage: mqtt_claims.py MQTT_A AMQP_A MQTT_B

The store holds two addresses (tests/tests/mqtt.rs writes them): `sensors`, a topic address
claiming `sensors/#`, and `jobs`, a queue claiming `jobs/+`.

1. MQTT subscribers on B to `sensors/+/temp` and `#` get what a publisher on A sends to
   claimed topics (from the `sensors` stream) and to unclaimed ones (the default address);
   `#` gets nothing of the queue's topics.
2. A subscription within the queue's claim is refused: SUBACK 0x83.
3. AMQP receivers on A: the queue `jobs` hands out the MQTT publishes to `jobs/+`, each once;
   `sensors` delivers the MQTT publish as an AMQP message.
4. An AMQP sender to `/topic/sensors/r2/temp` reaches the MQTT subscriber of `sensors/+/temp`.
5. A persistent MQTT 5 session on `sensors/#` leaves A, misses three messages, and gets them
   on B (its position in the claimed address's stream moved with it).
6. A shared subscription `$share/all/#` with a member on each adapter gets claimed and
   unclaimed topics alike (it reads both streams), each message once across the members.
7. An AMQP receiver on `/topic/#` gets MQTT publishes to claimed and unclaimed topics alike.
"""

import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from proton import Message
from proton.utils import BlockingConnection

mqtt_a, amqp_a, mqtt_b = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def client(name, port, clean=True, expiry=0):
    got = queue.Queue()
    subacks = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.put((m.topic, bytes(m.payload)))
    c.on_subscribe = lambda cl, u, mid, codes, props: subacks.put([int(x.value) for x in codes])
    props = Properties(PacketTypes.CONNECT)
    if expiry:
        props.SessionExpiryInterval = expiry
    c.connect("127.0.0.1", port, clean_start=clean, properties=props)
    c.loop_start()
    return c, got, subacks


def subscribe(c, subacks, topic):
    c.subscribe(topic, qos=1)
    return subacks.get(timeout=10)


def drain(got, n, what):
    out = []
    for _ in range(n):
        out.append(got.get(timeout=10))
    time.sleep(0.5)
    assert got.empty(), f"{what}: more than {n}: {out} + {list(got.queue)}"
    return out


# 1.
temp, temp_got, temp_acks = client("temp-sub", mqtt_b)
everything, all_got, all_acks = client("all-sub", mqtt_b)
assert subscribe(temp, temp_acks, "sensors/+/temp") == [1]
assert subscribe(everything, all_acks, "#") == [1]
# 2.
assert subscribe(temp, temp_acks, "jobs/+") == [0x83], "a queue's topics are not subscribable"
time.sleep(0.3)
pub, _, _ = client("pub", mqtt_a)
for topic, payload in [("sensors/r1/temp", b"21"), ("other/x", b"o"), ("jobs/1", b"j1"),
                       ("jobs/2", b"j2"), ("sensors/r1/humidity", b"40")]:
    pub.publish(topic, payload, qos=1).wait_for_publish(10)
assert drain(temp_got, 1, "sensors/+/temp") == [("sensors/r1/temp", b"21")]
got = sorted(drain(all_got, 3, "#"))
assert got == [("other/x", b"o"), ("sensors/r1/humidity", b"40"), ("sensors/r1/temp", b"21")], got
print("ok claimed and unclaimed topics reach MQTT subscribers on another adapter", flush=True)
print("ok subscription within a queue's claim refused with 0x83", flush=True)

# 3.
amqp = BlockingConnection(f"amqp://127.0.0.1:{amqp_a}", timeout=15)
jobs = [amqp.create_receiver("jobs", name=f"worker-{i}", credit=5) for i in range(2)]
taken = []
for _ in range(2):
    for w in jobs:
        try:
            m = w.receive(timeout=1)
        except Exception:
            continue
        w.accept()
        taken.append((m.subject, bytes(m.body)))
assert sorted(taken) == [("jobs/1", b"j1"), ("jobs/2", b"j2")], taken
print("ok queue claiming jobs/+ hands MQTT publishes to AMQP consumers, each once", flush=True)

sensors = amqp.create_receiver("sensors", name="sensor-reader", credit=10)
pub.publish("sensors/r3/temp", b"19", qos=1).wait_for_publish(10)
m = sensors.receive(timeout=10)
sensors.accept()
assert (m.subject, bytes(m.body)) == ("sensors/r3/temp", b"19"), (m.subject, m.body)
assert drain(temp_got, 1, "sensors/+/temp") == [("sensors/r3/temp", b"19")]
assert drain(all_got, 1, "#") == [("sensors/r3/temp", b"19")]
print("ok topic address sensors delivers MQTT publishes to AMQP receivers", flush=True)

# 4.
amqp.create_sender("/topic/sensors/r2/temp").send(Message(body=b"18"))
assert drain(temp_got, 1, "sensors/+/temp") == [("sensors/r2/temp", b"18")]
print("ok AMQP /topic/sensors/r2/temp -> MQTT sensors/+/temp", flush=True)

# 5.
mover, mover_got, mover_acks = client("mover", mqtt_a, clean=False, expiry=300)
assert subscribe(mover, mover_acks, "sensors/#") == [1]
pub.publish("sensors/r1/temp", b"before", qos=1).wait_for_publish(10)
assert drain(mover_got, 1, "mover on A") == [("sensors/r1/temp", b"before")]
mover.disconnect()
mover.loop_stop()
time.sleep(1.5)  # the session's position is saved at disconnect
for n in range(3):
    pub.publish(f"sensors/r{n}/temp", f"offline-{n}".encode(), qos=1).wait_for_publish(10)
back, back_got, _ = client("mover", mqtt_b, clean=False, expiry=300)
got = drain(back_got, 3, "mover back on B")
assert got == [(f"sensors/r{n}/temp", f"offline-{n}".encode()) for n in range(3)], got
print("ok persistent session on sensors/# resumed on the other adapter: 3/3 missed, none twice",
      flush=True)
back.disconnect()

# 6.
members = [client(f"member-{i}", port) for i, port in enumerate([mqtt_a, mqtt_b])]
for c, _, acks in members:
    assert subscribe(c, acks, "$share/all/#") == [1]
time.sleep(0.5)
sent = []
for n in range(20):
    topic = f"sensors/s{n}/temp" if n % 2 else f"other/{n}"
    pub.publish(topic, f"s{n}".encode(), qos=1).wait_for_publish(10)
    sent.append((topic, f"s{n}".encode()))
shared = []
deadline = time.time() + 20
while len(shared) < 20 and time.time() < deadline:
    for _, got, _ in members:
        while not got.empty():
            shared.append(got.get())
    time.sleep(0.05)
time.sleep(0.5)
for _, got, _ in members:
    shared.extend(list(got.queue))
assert sorted(shared) == sorted(sent), (len(shared), sorted(set(sent) - set(shared))[:5])
print("ok $share/all/# spans the sensors address and the default one: 20/20, none twice",
      flush=True)

# 7.
everywhere = amqp.create_receiver("/topic/#", name="everywhere", credit=10)
time.sleep(0.3)
pub.publish("other/amqp", b"u", qos=1).wait_for_publish(10)
pub.publish("sensors/amqp/temp", b"c", qos=1).wait_for_publish(10)
seen = []
for _ in range(2):
    m = everywhere.receive(timeout=10)
    everywhere.accept()
    seen.append((m.subject, bytes(m.body)))
assert sorted(seen) == [("other/amqp", b"u"), ("sensors/amqp/temp", b"c")], seen
print("ok AMQP /topic/# reads the sensors address and the default one", flush=True)
amqp.close()
