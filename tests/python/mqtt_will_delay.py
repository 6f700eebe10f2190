"""MQTT 5 will delay, checked with paho-mqtt 2.x (a third-party client).

Usage: mqtt_will_delay.py HOST PORT
Prints one line per check ("ok <name>") and exits 0 when all pass; on the first failure it
prints what was expected and what came, and exits 1.

Each "device" is a child process that connects with a will and then dies without a DISCONNECT
(os._exit), so the broker sees the connection lost:
- will delay 3 s, session expiry 60 s: the will comes after the delay, not at once;
- will delay 60 s, session expiry 2 s: the will comes when the session ends (the delay is
  capped by the session expiry);
- will delay 3 s, and the device reconnects (same client id, Clean Start 0) within it: no will.
"""
import queue
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from checks import check, fail

HOST, PORT = sys.argv[1], int(sys.argv[2])
RUN = uuid.uuid4().hex[:8]

DEVICE = """
import os, sys, queue
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
host, port, cid, topic, delay, expiry = sys.argv[1:7]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
wp = Properties(PacketTypes.WILLMESSAGE)
wp.WillDelayInterval = int(delay)
c.will_set(topic, f"will of {cid}".encode(), qos=1, properties=wp)
cp = Properties(PacketTypes.CONNECT)
cp.SessionExpiryInterval = int(expiry)
up = queue.Queue()
c.on_connect = lambda cl, u, f, rc, p: up.put(rc)
c.connect(host, int(port), keepalive=30, clean_start=True, properties=cp)
c.loop_start()
rc = up.get(timeout=10)
if rc.is_failure:
    sys.exit(1)
os._exit(5)  # no DISCONNECT: the connection is lost
"""




def device(cid, topic, delay, expiry):
    done = subprocess.run([sys.executable, "-c", DEVICE, HOST, str(PORT), cid, topic,
                           str(delay), str(expiry)], timeout=30)
    check(done.returncode == 5, f"device {cid} exited {done.returncode}, not 5")
    return time.monotonic()


def main():
    messages = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{RUN}",
                      protocol=mqtt.MQTTv5)
    subacked = queue.Queue()
    sub.on_message = lambda c, u, m: messages.put((time.monotonic(), m.topic, m.payload))
    sub.on_subscribe = lambda c, u, mid, rcs, p: subacked.put(rcs)
    sub.connect(HOST, PORT, keepalive=30, clean_start=True)
    sub.loop_start()
    sub.subscribe(f"{RUN}/will/#", qos=1)
    rcs = subacked.get(timeout=10)
    check([rc.value for rc in rcs] == [1], f"suback {rcs}")

    def next_will(timeout):
        try:
            return messages.get(timeout=timeout)
        except queue.Empty:
            return None

    # Delayed: not at once, but after the delay.
    lost = device(f"delayed-{RUN}", f"{RUN}/will/delayed", 3, 60)
    early = next_will(1.5)
    if early is not None:
        fail(f"a will with delay 3 s came {early[0] - lost:.1f} s after the loss")
    got = next_will(20)
    check(got is not None and got[1] == f"{RUN}/will/delayed", f"the delayed will did not come: {got}")
    print(f"ok will delay: published {got[0] - lost:.1f} s after the loss (delay 3 s)", flush=True)

    # The session ends before the delay: published then.
    lost = device(f"capped-{RUN}", f"{RUN}/will/capped", 60, 2)
    got = next_will(20)
    check(got is not None and got[1] == f"{RUN}/will/capped", f"the capped will did not come: {got}")
    print(f"ok will delay capped by the session expiry: published {got[0] - lost:.1f} s after the loss "
          "(delay 60 s, expiry 2 s)", flush=True)

    # Reconnected within the delay: no will.
    cid = f"back-{RUN}"
    device(cid, f"{RUN}/will/back", 3, 60)
    back = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    up = queue.Queue()
    back.on_connect = lambda c, u, f, rc, p: up.put((f.session_present, rc))
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 60
    back.connect(HOST, PORT, keepalive=30, clean_start=False, properties=cp)
    back.loop_start()
    present, rc = up.get(timeout=10)
    check(not rc.is_failure and present, f"reconnect: rc {rc}, session present {present}")
    extra = next_will(6)
    check(extra is None, f"a will came although the client reconnected within its delay: {extra}")
    back.disconnect()
    back.loop_stop()
    print("ok will delay cancelled by reconnecting within it", flush=True)
    sub.disconnect()
    sub.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
