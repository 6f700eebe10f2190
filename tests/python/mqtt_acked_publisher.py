"""Publish N QoS 1 messages with paho-mqtt and print one line per PUBACK: "acked <payload>".

Usage: mqtt_acked_publisher.py HOST PORT TOPIC COUNT [QOS] [PAUSE_SECONDS]
QOS is 1 (default) or 2 (then "acked" means PUBCOMP); PAUSE_SECONDS between publishes (0).
Stops when all are acknowledged or the connection is lost (it does not reconnect), so the
lines printed are exactly the messages the broker acknowledged.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    host, port, topic, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    qos = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    done = threading.Event()
    lock = threading.Lock()
    payload_of = {}  # mid -> payload, for publishes not yet acknowledged
    early = set()  # mids acknowledged before publish() returned them to us
    acked = 0

    def ack(payload):
        nonlocal acked
        print(f"acked {payload}", flush=True)
        acked += 1
        if acked == count:
            done.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        with lock:
            payload = payload_of.pop(mid, None)
            if payload is None:
                early.add(mid)
            else:
                ack(payload)

    def on_disconnect(client, userdata, flags, reason_code, properties):
        done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="acked-publisher")
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.max_inflight_messages_set(32)
    client.max_queued_messages_set(64)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    for i in range(count):
        if done.is_set():
            break
        while not done.is_set():
            info = client.publish(topic, f"m{i}", qos=qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                with lock:
                    if info.mid in early:
                        early.remove(info.mid)
                        ack(f"m{i}")
                    else:
                        payload_of[info.mid] = f"m{i}"
                break
            done.wait(0.001)  # queue full: wait for acknowledgements
        if pause:
            time.sleep(pause)
    done.wait(60)
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
