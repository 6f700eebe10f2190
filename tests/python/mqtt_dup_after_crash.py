"""DUP on resend after the adapter dies (paho-mqtt, MQTT 3.1.1 persistent session).

Usage: mqtt_dup_after_crash.py PORT_A PORT_B
A subscriber with clean session off takes 5 QoS 1 messages on A and does not acknowledge them,
then prints "holding 5" and waits for its connection to be lost (the test kills A with -9). It
reconnects to B, where 2 more messages are published, and prints "got <payload> dup=<0|1>
present=<0|1> on=<A|B>" for every delivery, then "done".
"""
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

port_a, port_b = int(sys.argv[1]), int(sys.argv[2])
run = uuid.uuid4().hex[:6]
topic = f"dup-{run}"
lock = threading.Lock()
got = []
lost = threading.Event()
connected = threading.Event()
present = [0]
on = ["A"]


def say(line):
    with lock:
        print(line, flush=True)


def on_connect(client, userdata, flags, reason_code, properties):
    present[0] = int(flags.session_present)
    client.subscribe(topic, qos=1)
    connected.set()


def on_message(client, userdata, msg):
    with lock:
        got.append(msg.payload.decode())
    say(f"got {msg.payload.decode()} dup={int(msg.dup)} present={present[0]} on={on[0]}")


def publish(port, payloads):
    p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
    p.connect("127.0.0.1", port)
    p.loop_start()
    for m in payloads:
        p.publish(topic, m, qos=1).wait_for_publish(10)
    p.disconnect()
    p.loop_stop()


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dupper-{run}",
                protocol=mqtt.MQTTv311, clean_session=False, manual_ack=True)
c.on_connect, c.on_message = on_connect, on_message
c.on_disconnect = lambda *a: lost.set()
c.connect("127.0.0.1", port_a, keepalive=30)
c.loop_start()
if not connected.wait(10):
    say("no CONNACK")
    sys.exit(1)
time.sleep(0.3)
publish(port_a, [f"m{i}" for i in range(5)])
deadline = time.time() + 10
while len(got) < 5 and time.time() < deadline:
    time.sleep(0.05)
say(f"holding {len(got)}")
if not lost.wait(30):
    say("connection to A not lost")
    sys.exit(1)
c.loop_stop()
connected.clear()
on[0] = "B"
c.connect("127.0.0.1", port_b, keepalive=30)
c.loop_start()
if not connected.wait(10):
    say("no CONNACK from B")
    sys.exit(1)
say("moved")
time.sleep(0.5)
publish(port_b, ["n0", "n1"])
deadline = time.time() + 10
while len(got) < 12 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
say("done")
c.disconnect()
c.loop_stop()
