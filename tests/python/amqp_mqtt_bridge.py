"""Cross-protocol: one topic serves MQTT (Paho) and AMQP (Qpid Proton) clients.

Usage: amqp_mqtt_bridge.py MQTT_PORT AMQP_PORT

1. MQTT 5 publish → AMQP receiver on `/topic/sensors/#`: payload, topic (subject), content
   type, user properties (application properties).
2. AMQP send to `/topic/cmd/dev1` → MQTT subscriber on `cmd/+`.
3. An MQTT 5 request (response topic + correlation data) answered by an AMQP responder through
   reply-to and the anonymous relay: the MQTT requester gets the answer with its correlation
   data and the responder's application properties as user properties.
"""

import os
import queue
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from proton import Message
from proton.utils import BlockingConnection

mqtt_port, amqp_port = int(sys.argv[1]), sys.argv[2]
run = str(os.getpid())


def mqtt_client(name):
    got, subacks = queue.Queue(), queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{run}", protocol=mqtt.MQTTv5)
    c.on_message = lambda client, userdata, m: got.put(m)
    c.on_subscribe = lambda client, userdata, mid, codes, props: subacks.put([int(x.value) for x in codes])
    c.connect("127.0.0.1", mqtt_port)
    c.loop_start()
    c.subscribed = lambda: subacks.get(timeout=15)
    return c, got


def subscribe(c, topic):
    """Subscribe and wait for the SUBACK: a topic subscription gets what is published after it,
    so a fixed sleep races a slow CONNECT on a loaded machine (it did once in CI)."""
    c.subscribe(topic, qos=1)
    assert c.subscribed() == [1], topic


amqp = BlockingConnection(f"amqp://127.0.0.1:{amqp_port}", timeout=15)

# 1. MQTT → AMQP
r = amqp.create_receiver(f"/topic/sensors-{run}/#", name="sensors", credit=10)
pub, _ = mqtt_client("pub")
props = Properties(PacketTypes.PUBLISH)
props.ContentType = "text/plain"
props.UserProperty = [("unit", "C"), ("site", "7")]
pub.publish(f"sensors-{run}/t1", b"21.5", qos=1, properties=props).wait_for_publish(10)
m = r.receive(timeout=10)
r.accept()
assert bytes(m.body) == b"21.5", m.body
assert m.subject == f"sensors-{run}/t1", m.subject
assert m.address == f"/topic/sensors-{run}/t1", m.address
assert m.content_type == "text/plain", m.content_type
assert m.properties == {"unit": "C", "site": "7"}, m.properties
print("ok MQTT publish -> AMQP receive", flush=True)

# 2. AMQP → MQTT
sub, sub_got = mqtt_client("sub")
subscribe(sub, f"cmd-{run}/+")
amqp.create_sender(f"/topic/cmd-{run}/dev1").send(Message(body="reboot", properties={"by": "ops"}))
m = sub_got.get(timeout=10)
assert (m.topic, m.payload, m.qos) == (f"cmd-{run}/dev1", b"reboot", 1), (m.topic, m.payload, m.qos)
assert m.properties.UserProperty == [("by", "ops")], m.properties
print("ok AMQP send -> MQTT subscribe", flush=True)

# 3. MQTT 5 request, AMQP responder
worker = amqp.create_receiver(f"/topic/requests-{run}/#", name="worker", credit=10)
relay = amqp.create_sender(None)
req, req_got = mqtt_client("requester")
subscribe(req, f"replies-{run}/requester")
props = Properties(PacketTypes.PUBLISH)
props.ResponseTopic = f"replies-{run}/requester"
props.CorrelationData = b"\x00req-42"
req.publish(f"requests-{run}/ping", b"ping", qos=1, properties=props).wait_for_publish(10)
m = worker.receive(timeout=10)
worker.accept()
assert m.reply_to == f"/topic/replies-{run}/requester", m.reply_to
# Proton hands binary ids over as memoryview and does not encode one back: copy to bytes.
assert bytes(m.correlation_id) == b"\x00req-42", m.correlation_id
relay.send(Message(address=m.reply_to, correlation_id=bytes(m.correlation_id), body=b"pong",
                   properties={"handled-by": "amqp"}))
answer = req_got.get(timeout=10)
assert answer.payload == b"pong", answer.payload
assert answer.properties.CorrelationData == b"\x00req-42", answer.properties
assert ("handled-by", "amqp") in answer.properties.UserProperty, answer.properties
print("ok MQTT 5 request answered by an AMQP responder", flush=True)
for c in (pub, sub, req):
    c.loop_stop()
    c.disconnect()
amqp.close()
