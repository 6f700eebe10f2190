"""MQTT 5 over WebSocket (path /mqtt) with paho-mqtt: a subscriber and a publisher with user
name and password; a 100 kB QoS 1 message (several WebSocket frames) goes round.

Usage: mqtt_ws_roundtrip.py PORT USER PASSWORD
Prints "ws ok <bytes>" and exits 0, or fails with a traceback.
"""
import sys, queue, paho.mqtt.client as mqtt
port = int(sys.argv[1])
got = queue.Queue()
def mk(cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, transport="websockets", protocol=mqtt.MQTTv5)
    c.ws_set_options(path="/mqtt")
    c.username_pw_set(sys.argv[2], sys.argv[3])
    return c
sub = mk("ws-sub"); sub.on_message = lambda c,u,m: got.put(m.payload)
ok = queue.Queue(); sub.on_subscribe = lambda *a: ok.put(1)
sub.connect("127.0.0.1", port); sub.loop_start(); sub.subscribe("ws/t", qos=1); ok.get(timeout=10)
pub = mk("ws-pub"); pub.connect("127.0.0.1", port); pub.loop_start()
pub.publish("ws/t", b"x" * 100000, qos=1).wait_for_publish(10)
m = got.get(timeout=10); print("ws ok", len(m))
