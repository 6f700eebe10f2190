"""MQTT session takeover across adapters, keep-alive, receive maximum and outbound topic
aliases, checked with paho-mqtt 2.x (a third-party client) and, for the keep-alive, raw bytes
(a client that falls silent is what is tested, and Paho does not fall silent).

Usage: mqtt_protocol_limits.py HOST PORT_A PORT_B   (two adapters on one store)
Prints one line per check ("ok <name>") and exits 0 when all pass; on the first failure it
prints what was expected and what came, and exits 1.
"""
import queue
import socket
import struct
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from checks import check, fail, ok

HOST, PORT_A, PORT_B = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
RUN = uuid.uuid4().hex[:8]  # client ids and topics of this run only


class Client:
    """A Paho client whose events land in queues. It never reconnects by itself: a client
    that did would take its session back from the one that took it over."""

    def __init__(self, client_id, port, protocol=mqtt.MQTTv5, clean_start=True, props=None,
                 manual_ack=False):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=protocol, reconnect_on_failure=False, manual_ack=manual_ack)
        self.connacks, self.disconnects, self.messages, self.acks = (queue.Queue() for _ in range(4))
        self.c.on_connect = lambda c, u, f, rc, p: self.connacks.put((f.session_present, rc))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.acks.put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put(mid)
        kw = {"clean_start": clean_start, "properties": props} if protocol == mqtt.MQTTv5 else {}
        self.c.connect(HOST, port, keepalive=30, **kw)
        self.c.loop_start()
        present, rc = self.connacks.get(timeout=10)
        check(not rc.is_failure, f"{client_id}: CONNACK {rc}")
        self.session_present = present

    def subscribe(self, topic, qos=1):
        self.c.subscribe(topic, qos=qos)
        rcs = self.acks.get(timeout=10)
        check([rc.value for rc in rcs] == [qos], f"SUBACK {rcs}")

    def publish(self, topic, payload, qos=1):
        info = self.c.publish(topic, payload, qos=qos)
        check(self.acks.get(timeout=10) == info.mid, "PUBACK")

    def message(self, timeout=10):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def connect_props(**kw):
    p = Properties(PacketTypes.CONNECT)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def takeover_v5():
    cid = f"takeover5-{RUN}"
    first = Client(cid, PORT_A, props=connect_props(SessionExpiryInterval=60))
    first.subscribe(f"{RUN}/takeover5")
    second = Client(cid, PORT_B, clean_start=False, props=connect_props(SessionExpiryInterval=60))
    try:
        rc = first.disconnects.get(timeout=10)
    except queue.Empty:
        fail("the first connection was not closed when its client id connected to another adapter")
    check(rc.value == 0x8E, f"DISCONNECT reason {rc} ({rc.value:#x}), not 0x8E session taken over")
    check(second.session_present, "the second connection did not get the session (session present 0)")
    # The session, subscription included, now lives on the second adapter.
    pub = Client(f"pub5-{RUN}", PORT_A)
    pub.publish(f"{RUN}/takeover5", b"after the takeover")
    m = second.message()
    check(m is not None and m.payload == b"after the takeover", f"delivery after takeover: {m}")
    pub.close()
    second.close()
    first.c.loop_stop()
    ok("session takeover across adapters: DISCONNECT 0x8E to the old connection, session present "
       "and its subscription served on the other adapter")


def takeover_v311():
    cid = f"takeover3-{RUN}"
    first = Client(cid, PORT_A, protocol=mqtt.MQTTv311)
    second = Client(cid, PORT_B, protocol=mqtt.MQTTv311)
    try:
        first.disconnects.get(timeout=10)
    except queue.Empty:
        fail("MQTT 3.1.1: the first connection was not closed by the takeover on another adapter")
    # The newer connection lives on.
    second.subscribe(f"{RUN}/takeover3")
    check(second.disconnects.empty(), "the newer connection was closed too")
    second.close()
    first.c.loop_stop()
    ok("session takeover across adapters, MQTT 3.1.1: the old connection closed, the new one serves")


def read_packet(s):
    """One MQTT control packet: (first byte, body)."""
    head = s.recv(1)
    if not head:
        return None
    length, shift = 0, 0
    while True:
        b = s.recv(1)
        if not b:
            return None
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if b[0] < 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return head[0], body


def raw_connect(version, keep_alive):
    cid = f"silent{version}-{RUN}".encode()
    var = b"\x00\x04MQTT" + bytes([version, 0x02]) + struct.pack(">H", keep_alive)
    if version == 5:
        var += b"\x00"  # no properties
    payload = struct.pack(">H", len(cid)) + cid
    body = var + payload
    return bytes([0x10, len(body)]) + body


def keep_alive(version):
    s = socket.create_connection((HOST, PORT_A), timeout=10)
    s.sendall(raw_connect(version, 1))
    connack = read_packet(s)
    check(connack is not None and connack[0] == 0x20 and connack[1][1] == 0,
          f"MQTT {version}: CONNACK {connack}")
    silent = time.monotonic()
    # Now silent: the server must close after 1.5 x keep-alive [MQTT-3.1.2-24].
    try:
        packet = read_packet(s)
    except socket.timeout:
        fail(f"MQTT {version}: still open 10 s after a client with keep-alive 1 s fell silent")
    waited = time.monotonic() - silent
    check(waited >= 1.0, f"MQTT {version}: closed {waited:.2f} s after CONNACK, before 1.5 x keep-alive")
    if version == 5:
        check(packet is not None and packet[0] == 0xE0 and packet[1][:1] == b"\x8d",
              f"MQTT 5: {packet} instead of DISCONNECT 0x8D keep alive timeout")
        check(read_packet(s) is None, "MQTT 5: the socket stayed open after DISCONNECT")
    else:
        check(packet is None, f"MQTT 3.1.1: {packet} instead of the socket closing")
    s.close()
    ok(f"keep-alive, MQTT {'5: DISCONNECT 0x8D and close' if version == 5 else '3.1.1: close'} "
       f"{waited:.1f} s after a client with keep-alive 1 s fell silent")


def receive_maximum():
    topic = f"{RUN}/receive-max"
    sub = Client(f"rm-{RUN}", PORT_A, props=connect_props(ReceiveMaximum=2), manual_ack=True)
    sub.subscribe(topic)
    pub = Client(f"rm-pub-{RUN}", PORT_A)
    for i in range(5):
        pub.publish(topic, f"m{i}".encode())
    got = [sub.message(), sub.message()]
    check(all(m is not None for m in got), f"the first two deliveries did not come: {got}")
    extra = sub.message(timeout=1.5)
    check(extra is None, f"a third QoS 1 delivery came with two unacknowledged and Receive Maximum 2: "
          f"{extra and extra.payload}")
    sub.c.ack(got[0].mid, 1)
    third = sub.message()
    check(third is not None, "no delivery after one PUBACK freed a slot")
    got.append(third)
    sub.c.ack(got[1].mid, 1)
    sub.c.ack(third.mid, 1)
    got += [sub.message(), sub.message()]
    check(all(m is not None for m in got), f"not all five came: {got}")
    for m in got[3:]:
        sub.c.ack(m.mid, 1)
    check([m.payload for m in got] == [f"m{i}".encode() for i in range(5)],
          f"order: {[m.payload for m in got]}")
    pub.close()
    sub.close()
    ok("receive maximum 2: two unacknowledged QoS 1 deliveries at most, the rest as PUBACKs come, in order")


def topic_aliases():
    topic = f"{RUN}/aliases/a/rather/long/topic/name"
    with_aliases = Client(f"alias-{RUN}", PORT_A, props=connect_props(TopicAliasMaximum=4))
    without = Client(f"noalias-{RUN}", PORT_A)
    with_aliases.subscribe(topic)
    without.subscribe(topic)
    pub = Client(f"alias-pub-{RUN}", PORT_A)
    for i in range(3):
        pub.publish(topic, f"a{i}".encode())
    got = [with_aliases.message() for _ in range(3)]
    check(all(m is not None for m in got), f"deliveries: {got}")
    alias = [getattr(m.properties, "TopicAlias", None) for m in got]
    # Paho does not resolve inbound aliases, so what it shows is what was on the wire.
    check(got[0].topic == topic and alias[0] is not None and 1 <= alias[0] <= 4,
          f"the first delivery should name the topic and set an alias: {got[0].topic!r} alias {alias[0]}")
    check([m.topic for m in got[1:]] == ["", ""] and alias[1:] == [alias[0]] * 2,
          f"later deliveries should use the alias alone: {[(m.topic, a) for m, a in zip(got, alias)]}")
    check([m.payload for m in got] == [b"a0", b"a1", b"a2"], f"payloads {[m.payload for m in got]}")
    plain = [without.message() for _ in range(3)]
    check(all(m is not None and m.topic == topic and getattr(m.properties, "TopicAlias", None) is None
              for m in plain), "a client that allowed no aliases got one")
    for c in (pub, with_aliases, without):
        c.close()
    ok(f"outbound topic aliases: alias {alias[0]} set once then used alone; none for a client "
       "with Topic Alias Maximum 0")


def main():
    takeover_v5()
    takeover_v311()
    keep_alive(5)
    keep_alive(4)
    receive_maximum()
    topic_aliases()
    return 0


if __name__ == "__main__":
    sys.exit(main())
