"""A member of an MQTT 5 shared subscription with paho-mqtt, as the shared-subscription
scripts use it.

`member(client_id, port, share, receive_maximum, manual_ack, on_payload)` connects to
127.0.0.1:PORT, subscribes SHARE at QoS 1, waits for the SUBACK, and calls
`on_payload(text)` for every message; with `manual_ack` it never acknowledges on its own.
"""
import queue

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions


def member(client_id, port, share, receive_maximum, manual_ack, on_payload):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    ready = queue.Queue()
    c.on_subscribe = lambda *a: ready.put(1)
    c.on_message = lambda client, userdata, msg: on_payload(msg.payload.decode())
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = receive_maximum
    c.connect("127.0.0.1", port, properties=props)
    c.loop_start()
    c.subscribe(share, options=SubscribeOptions(qos=1))
    ready.get(timeout=10)
    return c
