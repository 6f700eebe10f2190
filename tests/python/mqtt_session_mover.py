"""A persistent-session subscriber (paho-mqtt) that moves to another broker when its connection
is lost, keeping its client state (in-flight QoS 2 packet ids) as one process does.

Usage: mqtt_session_mover.py PORT_A PORT_B TOPIC QOS IDLE_SECONDS
Connects to 127.0.0.1:PORT_A with clean session off (MQTT 3.1.1), subscribes TOPIC at QOS,
prints "got <payload>" for every message delivered to the application, "moved" when it
reconnects to PORT_B after losing A, "present <0|1>" after each CONNACK, "subscribed" after
each SUBACK, and exits after IDLE_SECONDS without a message.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    port_a, port_b, topic, qos, idle = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                        int(sys.argv[4]), float(sys.argv[5]))
    last = [time.monotonic()]
    out = threading.Lock()  # paho's thread and ours both print

    def say(line):
        with out:
            print(line, flush=True)

    lost = threading.Event()
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        say(f"present {int(flags.session_present)}")
        client.subscribe(topic, qos=qos)
        connected.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        say("subscribed")

    def on_message(client, userdata, msg):
        last[0] = time.monotonic()
        say(f"got {msg.payload.decode()}")

    def on_disconnect(client, userdata, flags, reason_code, properties):
        lost.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mover-{topic}",
                    protocol=mqtt.MQTTv311, clean_session=False)
    c.on_connect, c.on_message, c.on_disconnect = on_connect, on_message, on_disconnect
    c.on_subscribe = on_subscribe
    c.connect("127.0.0.1", port_a, keepalive=5)
    c.loop_start()
    if not connected.wait(10):
        print("no CONNACK", flush=True)
        return 1
    moved = False
    while time.monotonic() - last[0] < idle:
        if lost.is_set() and not moved:
            # Same client object: its in-flight state goes along, as in a real device.
            c.loop_stop()
            connected.clear()
            c.connect("127.0.0.1", port_b, keepalive=5)
            c.loop_start()
            if not connected.wait(10):
                print("no CONNACK from B", flush=True)
                return 1
            say("moved")
            moved = True
            lost.clear()
            last[0] = time.monotonic()
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
