"""MQTT 5 features of a broker, checked with paho-mqtt 2.x (a third-party client).

Usage: mqtt5_features.py HOST PORT
Prints one line per check ("ok <name>") and exits 0 when all pass; on the first failure it
prints what was expected and what came, and exits 1.
"""
import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from checks import check, fail

HOST, PORT = sys.argv[1], int(sys.argv[2])
RUN = uuid.uuid4().hex[:8]  # topics of this run only


class Client:
    """A paho client whose events land in queues, so checks can wait for them in order."""

    def __init__(self, client_id="", props=None):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        self.connack = queue.Queue()
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.unsubacks = queue.Queue()
        self.acks = queue.Queue()
        self.disconnects = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put((f, rc, p))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.unsubacks.put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put((mid, rc))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put((rc, p))
        self.c.connect(HOST, PORT, keepalive=30, clean_start=True, properties=props)
        self.c.loop_start()
        flags, rc, self.props = self.connack.get(timeout=10)
        check(not rc.is_failure, f"CONNACK {rc}")

    def subscribe(self, topics, props=None):
        self.c.subscribe(topics, properties=props)
        return self.subacks.get(timeout=10)

    def message(self, timeout=10):
        return self.messages.get(timeout=timeout)

    def no_message(self, wait=1.0):
        try:
            m = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        fail(f"unexpected message on {m.topic}: {m.payload!r}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def pub_props(**kw):
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def main():
    # Assigned client identifier and the limits we announce.
    anon = Client("")
    assigned = getattr(anon.props, "AssignedClientIdentifier", None)
    check(assigned, f"assigned client id in CONNACK: {anon.props}")
    check(getattr(anon.props, "ReceiveMaximum", 0) > 0, "receive maximum announced")
    check(getattr(anon.props, "TopicAliasMaximum", 0) > 0, "topic alias maximum announced")
    print(f"ok assigned client identifier {assigned}", flush=True)

    # Subscription identifier, every publish property, user property order, expiry.
    sub = Client(f"sub-{RUN}")
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 42
    rcs = sub.subscribe([(f"{RUN}/data/#", SubscribeOptions(qos=2))], sp)
    check([rc.value for rc in rcs] == [2], f"granted QoS 2: {rcs}")
    pub = Client(f"pub-{RUN}")
    props = pub_props(ContentType="application/json", ResponseTopic=f"{RUN}/replies",
                      CorrelationData=b"\x00\x01corr", PayloadFormatIndicator=1,
                      MessageExpiryInterval=60,
                      UserProperty=[("b", "1"), ("a", "2"), ("b", "3")])
    info = pub.c.publish(f"{RUN}/data/x", b'{"v":1}', qos=2, properties=props)
    info.wait_for_publish(10)
    m = sub.message()
    mp = m.properties
    check(m.topic == f"{RUN}/data/x" and m.payload == b'{"v":1}' and m.qos == 2,
          f"message {m.topic} {m.payload} {m.qos}")
    check(getattr(mp, "SubscriptionIdentifier", None) == [42], f"sub id: {mp}")
    check(mp.ContentType == "application/json", f"content type: {mp}")
    check(mp.ResponseTopic == f"{RUN}/replies", f"response topic: {mp}")
    check(mp.CorrelationData == b"\x00\x01corr", f"correlation: {mp}")
    check(mp.PayloadFormatIndicator == 1, f"format: {mp}")
    check(0 < mp.MessageExpiryInterval <= 60, f"expiry: {mp}")
    check(mp.UserProperty == [("b", "1"), ("a", "2"), ("b", "3")], f"user props: {mp}")
    print("ok publish properties, subscription identifier, user property order", flush=True)

    # Request/response between two MQTT 5 clients through response topic + correlation.
    responder = Client(f"responder-{RUN}")
    responder.subscribe([(f"{RUN}/svc/echo", SubscribeOptions(qos=1))])
    requester = Client(f"requester-{RUN}")
    requester.subscribe([(f"{RUN}/replies/{RUN}", SubscribeOptions(qos=1))])
    requester.c.publish(f"{RUN}/svc/echo", b"ping", qos=1,
                        properties=pub_props(ResponseTopic=f"{RUN}/replies/{RUN}",
                                             CorrelationData=b"req-1"))
    req = responder.message()
    responder.c.publish(req.properties.ResponseTopic, b"pong:" + req.payload, qos=1,
                        properties=pub_props(CorrelationData=req.properties.CorrelationData))
    rep = requester.message()
    check(rep.payload == b"pong:ping" and rep.properties.CorrelationData == b"req-1",
          f"reply {rep.payload} {rep.properties}")
    print("ok request/response with correlation data", flush=True)

    # No-local: a client does not get its own publishes on a no-local subscription, and
    # retain-as-published keeps the flag (retain handling 2: no retained on subscribe).
    own = Client(f"own-{RUN}")
    own.subscribe([(f"{RUN}/own", SubscribeOptions(qos=1, noLocal=True)),
                   (f"{RUN}/rap", SubscribeOptions(qos=1, retainAsPublished=True,
                                                   retainHandling=2))])
    own.c.publish(f"{RUN}/own", b"mine", qos=1).wait_for_publish(10)
    pub.c.publish(f"{RUN}/own", b"theirs", qos=1).wait_for_publish(10)
    m = own.message()
    check(m.payload == b"theirs", f"no-local: got {m.payload}")
    pub.c.publish(f"{RUN}/rap", b"flagged", qos=1, retain=True).wait_for_publish(10)
    m = own.message()
    check(m.payload == b"flagged" and m.retain, f"retain as published: {m.payload} {m.retain}")
    print("ok no-local and retain-as-published", flush=True)

    # Topic alias from the client: first with the topic, then the alias alone.
    aliased = Client(f"alias-{RUN}")
    for body in (b"one", b"two"):
        topic = f"{RUN}/data/aliased" if body == b"one" else ""
        aliased.c.publish(topic, body, qos=1,
                          properties=pub_props(TopicAlias=1)).wait_for_publish(10)
        m = sub.message()
        check(m.topic == f"{RUN}/data/aliased" and m.payload == body,
              f"alias: {m.topic} {m.payload}")
    print("ok inbound topic alias", flush=True)

    # SUBACK / UNSUBACK reason codes.
    # (paho refuses to send an invalid filter itself; the session tests cover 0x8F.)
    # Shared subscriptions are granted.
    rcs = sub.subscribe([(f"{RUN}/ok", SubscribeOptions(qos=1)),
                         (f"$share/g/{RUN}", SubscribeOptions(qos=1))])
    check([rc.value for rc in rcs] == [0x01, 0x01], f"suback codes {rcs}")
    sub.c.unsubscribe([f"{RUN}/never", f"{RUN}/data/#"])
    rcs = sub.unsubacks.get(timeout=10)
    check([rc.value for rc in rcs] == [0x11, 0x00], f"unsuback codes {rcs}")
    print("ok SUBACK and UNSUBACK reason codes", flush=True)

    # A protocol violation gets a DISCONNECT with its reason: topic alias over our maximum.
    bad = Client(f"bad-{RUN}")
    maximum = bad.props.TopicAliasMaximum
    bad.c.publish(f"{RUN}/x", b"x", qos=0, properties=pub_props(TopicAlias=maximum + 1))
    rc, _ = bad.disconnects.get(timeout=10)
    check(rc.value == 0x94, f"disconnect reason {rc}")
    bad.c.loop_stop()
    print("ok DISCONNECT 0x94 for a topic alias over the maximum", flush=True)

    # A payload that is not UTF-8 although its format indicator says so: PUBACK 0x99 at
    # QoS 1 (and nothing delivered), DISCONNECT 0x99 at QoS 0.
    liar = Client(f"liar-{RUN}")
    info = liar.c.publish(f"{RUN}/data/liar", b"\xff\xfe not utf-8", qos=1,
                          properties=pub_props(PayloadFormatIndicator=1))
    mid, rc = liar.acks.get(timeout=10)
    check(mid == info.mid and rc.value == 0x99, f"PUBACK for a non-UTF-8 payload: {rc}")
    sub.no_message()
    liar.c.publish(f"{RUN}/data/liar", b"\xc3\x28", qos=0,
                   properties=pub_props(PayloadFormatIndicator=1))
    rc, _ = liar.disconnects.get(timeout=10)
    check(rc.value == 0x99, f"DISCONNECT for a non-UTF-8 payload at QoS 0: {rc}")
    liar.c.loop_stop()
    sub.no_message(wait=0.5)
    print("ok payload format invalid: PUBACK 0x99, DISCONNECT 0x99", flush=True)

    # Enhanced authentication is not supported: CONNACK 0x8C (bad authentication method).
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"auth-{RUN}",
                    protocol=mqtt.MQTTv5)
    codes = queue.Queue()
    c.on_connect = lambda cl, u, f, rc, p: codes.put(rc)
    cp = Properties(PacketTypes.CONNECT)
    cp.AuthenticationMethod = "SCRAM-SHA-256"
    cp.AuthenticationData = b"client-first"
    c.connect(HOST, PORT, clean_start=True, properties=cp)
    c.loop_start()
    rc = codes.get(timeout=10)
    c.loop_stop()
    check(rc.value == 0x8C, f"CONNACK for enhanced authentication: {rc}")
    print("ok enhanced authentication refused with CONNACK 0x8C", flush=True)

    # A delivery larger than the client's Maximum Packet Size is not sent to it (it is
    # dropped for that client only); smaller ones after it still are.
    cp = Properties(PacketTypes.CONNECT)
    cp.MaximumPacketSize = 256
    small = Client(f"small-{RUN}", props=cp)
    small.subscribe([(f"{RUN}/sized", SubscribeOptions(qos=1))])
    big = b"x" * 1000
    pub.c.publish(f"{RUN}/sized", big, qos=1).wait_for_publish(10)
    pub.c.publish(f"{RUN}/sized", b"fits", qos=1).wait_for_publish(10)
    m = small.message()
    check(m.payload == b"fits", f"over the maximum packet size delivered: {len(m.payload)} B")
    small.no_message(wait=0.5)
    small.close()
    print("ok deliveries over the client's maximum packet size dropped", flush=True)

    # Session expiry: kept while within its interval (session present), gone after it.
    def connect_expiring(clean):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"exp-{RUN}",
                        protocol=mqtt.MQTTv5)
        flags = queue.Queue()
        c.on_connect = lambda cl, u, f, rc, p: flags.put(f.session_present)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 1
        c.connect(HOST, PORT, clean_start=clean, properties=props)
        c.loop_start()
        present = flags.get(timeout=10)
        return c, present

    c, present = connect_expiring(True)
    check(not present, "a clean start has no session")
    c.subscribe(f"{RUN}/exp", qos=1)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()
    c, present = connect_expiring(False)
    check(present, "reconnected within the expiry: session present")
    c.disconnect()
    c.loop_stop()
    time.sleep(2.2)
    c, present = connect_expiring(False)
    check(not present, "reconnected after the expiry: no session")
    c.disconnect()
    c.loop_stop()
    print("ok session expiry", flush=True)

    for c in (anon, sub, pub, responder, requester, own, aliased):
        c.close()
    time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
