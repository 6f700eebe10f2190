"""AMQP 1.0 scenarios against a running Wharf, with Qpid Proton (python-qpid-proton).

Usage: amqp_proton_scenarios.py PORT USER PASSWORD STRICT_PORT

PORT is a Wharf with auto-create on and USER/PASSWORD in its users file; STRICT_PORT is a
Wharf with `[amqp] auto_create = false` and `max_message_size = 65536` whose catalog declares the queues `declared`, `orders`
(max_delivery 2, dead_letter `orders.dlq`) and `orders.dlq`.
Prints `ok <scenario>` for each passing scenario and exits non-zero at the first failure.
"""

import sys
import time
import uuid

from proton import (ConnectionException, Data, Delivery, LinkException, Message, Timeout, char,
                    int32, symbol, timestamp, ulong)
from proton import Link
from proton.reactor import AtMostOnce, LinkOption
from proton.utils import BlockingConnection, LinkDetached, SendException

PORT, USER, PASSWORD, STRICT = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
URL = f"amqp://127.0.0.1:{PORT}"
RUN = uuid.uuid4().hex[:8]


def name(base):
    return f"{base}-{RUN}"


def ok(what):
    print("ok", what, flush=True)


def connect(**kw):
    return BlockingConnection(URL, timeout=15, **kw)


class Capability(LinkOption):
    """Terminus capability (`queue` / `topic`), as Artemis and qpid-jms send it."""

    def __init__(self, cap):
        self.cap = cap

    def apply(self, link):
        term = link.source if link.is_receiver else link.target
        term.capabilities.put_array(False, Data.SYMBOL)
        term.capabilities.enter()
        term.capabilities.put_symbol(symbol(self.cap))
        term.capabilities.exit()


def drain_all(receiver, expect, timeout=10):
    got = []
    for _ in range(expect):
        m = receiver.receive(timeout=timeout)
        got.append(m.body)
        receiver.accept()
    return got


def nothing_more(receiver, what, wait=1):
    """Assert that `receiver` gets no further message within `wait` seconds."""
    try:
        extra = receiver.receive(timeout=wait)
    except Timeout:
        return
    raise AssertionError(f"{what}: {repr(extra.body)[:60]}")


def send_receive():
    c = connect()
    q = name("orders/q")  # '/' is allowed in addresses
    s = c.create_sender(q)
    for i in range(10):
        s.send(Message(body=f"m{i}", properties={"i": i}))  # waits for accepted
    r = c.create_receiver(q, credit=10)
    got = []
    for i in range(10):
        m = r.receive(timeout=10)
        assert m.properties["i"] == i, m.properties
        got.append(m.body)
        r.accept()
    assert got == [f"m{i}" for i in range(10)], got
    c.close()
    ok("send-receive")


def competing_consumers():
    q = name("work")
    c1, c2, cs = connect(), connect(), connect()
    r1 = c1.create_receiver(q, credit=5)
    r2 = c2.create_receiver(q, credit=5)
    s = cs.create_sender(q)
    for i in range(40):
        s.send(Message(body=i))
    seen1, seen2 = [], []
    deadline = time.time() + 20
    while len(seen1) + len(seen2) < 40 and time.time() < deadline:
        for r, seen, c in ((r1, seen1, c1), (r2, seen2, c2)):
            try:
                m = r.receive(timeout=0.2)
                seen.append(m.body)
                r.accept()
            except Exception:
                pass
    assert sorted(seen1 + seen2) == list(range(40)), (seen1, seen2)
    assert not set(seen1) & set(seen2), "a message went to both consumers"
    assert seen1 and seen2, f"one consumer got nothing: {len(seen1)} / {len(seen2)}"
    for c in (c1, c2, cs):
        c.close()
    ok(f"competing-consumers ({len(seen1)}/{len(seen2)})")


def fan_out():
    t = name("news")
    c = connect()
    r1 = c.create_receiver(t, credit=10, name="sub-1", options=Capability("topic"))
    r2 = c.create_receiver(t, credit=10, name="sub-2", options=Capability("topic"))
    s = c.create_sender(t, options=Capability("topic"))
    for i in range(5):
        s.send(Message(body=i))
    assert drain_all(r1, 5) == list(range(5))
    assert drain_all(r2, 5) == list(range(5))
    c.close()
    ok("fan-out")


def request_response():
    requests = name("requests")
    client, server = connect(), connect()
    replies = client.create_receiver(None, dynamic=True, credit=10)
    reply_to = replies.link.remote_source.address
    assert reply_to, "dynamic receiver got no address"
    worker = server.create_receiver(requests, credit=10)
    relay = server.create_sender(None)  # anonymous relay
    ask = client.create_sender(requests)
    for i in range(3):
        ask.send(Message(body=f"ping {i}", reply_to=reply_to, correlation_id=f"c{i}"))
    for i in range(3):
        m = worker.receive(timeout=10)
        worker.accept()
        assert m.reply_to == reply_to, m.reply_to
        relay.send(Message(address=m.reply_to, correlation_id=m.correlation_id, body=m.body.replace("ping", "pong")))
    for i in range(3):
        m = replies.receive(timeout=10)
        replies.accept()
        assert (m.correlation_id, m.body) == (f"c{i}", f"pong {i}"), (m.correlation_id, m.body)
    # Anonymous relay to an address that cannot exist: rejected, and the link lives on.
    try:
        relay.send(Message(address="bad address!", body="x"))
        raise AssertionError("bad address accepted")
    except SendException as e:
        assert e.state == Delivery.REJECTED, e.state
    relay.send(Message(address=requests, body="after"))
    assert worker.receive(timeout=10).body == "after"
    worker.accept()
    client.close()
    server.close()
    ok("request-response (dynamic reply-to, anonymous relay)")


def outcomes():
    q = name("outcomes")
    c = connect()
    s = c.create_sender(q)
    for body in ("A", "B", "C", "D"):
        s.send(Message(body=body))
    # No prefetch: each receive() grants one credit, so the order below is the queue's.
    r = c.create_receiver(q, credit=0)
    # released: comes back, not counted as a delivery attempt
    m = r.receive(timeout=10)
    assert m.body == "A"
    r.release(delivered=False)
    m = r.receive(timeout=10)
    assert (m.body, m.delivery_count) == ("A", 0), (m.body, m.delivery_count)
    r.accept()
    # modified, delivery-failed: comes back with delivery-count 1
    m = r.receive(timeout=10)
    assert m.body == "B"
    r.fetcher.unsettled[0].local.failed = True
    r.settle(Delivery.MODIFIED)
    m = r.receive(timeout=10)
    assert (m.body, m.delivery_count, m.first_acquirer) == ("B", 1, False), (m.body, m.delivery_count, m.first_acquirer)
    r.accept()
    # rejected: gone (no dead-letter address here)
    m = r.receive(timeout=10)
    assert m.body == "C"
    r.reject()
    m = r.receive(timeout=10)
    assert m.body == "D", m.body
    r.accept()
    # modified, undeliverable-here: goes to another consumer
    s.send(Message(body="E"))
    m = r.receive(timeout=10)
    assert m.body == "E"
    other = c.create_receiver(q, credit=0, name="other")
    r.fetcher.unsettled[0].local.undeliverable = True
    r.settle(Delivery.MODIFIED)
    m = other.receive(timeout=10)
    assert m.body == "E", m.body
    other.accept()
    c.close()
    ok("outcomes (released, modified failed / undeliverable-here, rejected, accepted; link survives)")


def credit_and_drain():
    q = name("drain")
    c = connect()
    s = c.create_sender(q)
    for i in range(3):
        s.send(Message(body=i))
    r = c.create_receiver(q, credit=0)
    r.link.drain(10)
    c.wait(lambda: not r.link.draining(), timeout=10, msg="drain with 3 waiting")
    # The drain answer came in the same read as the messages; let Proton hand them all over.
    c.wait(lambda: r.fetcher.has_message == 3, timeout=2, msg="the 3 messages sent before the drain answer")
    assert r.link.credit == 0, r.link.credit
    for i in range(3):
        assert r.fetcher.pop().body == i
        r.accept()
    # drain on an empty queue completes at once, with no message
    r.link.drain(5)
    c.wait(lambda: not r.link.draining(), timeout=10, msg="drain on an empty queue")
    assert r.fetcher.has_message == 0 and r.link.credit == 0
    # credit given later: a message arrives only then
    s.send(Message(body="late"))
    time.sleep(0.3)
    assert r.fetcher.has_message == 0, "delivered without credit"
    r.link.flow(1)
    assert r.receive(timeout=10).body == "late"
    r.accept()
    c.close()
    ok("credit and drain (3 waiting, empty queue, no credit no delivery)")


def large_messages():
    q = name("large")
    c = BlockingConnection(URL, timeout=30, max_frame_size=4096)
    body = bytes(range(256)) * 4096  # 1 MiB
    s = c.create_sender(q)
    s.send(Message(body=body))
    r = c.create_receiver(q, credit=1)
    m = r.receive(timeout=30)
    r.accept()
    assert m.body == body, len(m.body)
    c.close()
    ok("1 MiB message with max-frame-size 4096 both ways")


def property_round_trip():
    q = name("props")
    c = connect()
    sent = Message(
        id="id-1",
        durable=True,
        priority=7,
        ttl=60.0,
        address=q,
        subject="subj",
        reply_to="somewhere",
        correlation_id=ulong(42),
        content_type="application/octet-stream",
        content_encoding="identity",
        expiry_time=time.time() + 3600,
        creation_time=time.time(),
        group_id="g",
        group_sequence=3,
        reply_to_group_id="rg",
        properties={"s": "x", "i": int32(-5), "l": 1 << 40, "b": True, "d": 1.5, "c": char("z"), "t": timestamp(1000)},
        annotations={symbol("x-opt-test"): "ann"},
        body=b"\x00\x01binary",
    )
    c.create_sender(q).send(sent)
    r = c.create_receiver(q, credit=1)
    got = r.receive(timeout=10)
    r.accept()
    for f in ("id", "durable", "priority", "address", "subject", "reply_to", "correlation_id",
              "content_type", "content_encoding", "group_id", "group_sequence", "reply_to_group_id",
              "properties", "annotations", "body"):
        assert getattr(got, f) == getattr(sent, f), (f, getattr(got, f), getattr(sent, f))
    assert abs(got.expiry_time - sent.expiry_time) < 0.01 and abs(got.creation_time - sent.creation_time) < 0.01
    assert got.ttl == 60.0, got.ttl
    c.close()
    ok("property round trip (header, properties, application properties, annotations, binary body)")


def ttl_expiry():
    q = name("ttl")
    c = connect()
    s = c.create_sender(q)
    s.send(Message(body="short", ttl=0.2))
    s.send(Message(body="long"))
    time.sleep(0.5)
    r = c.create_receiver(q, credit=5)
    assert r.receive(timeout=10).body == "long"
    r.accept()
    r.close()  # a receiver with credit would get the next message before it expires
    # absolute-expiry-time in the properties, without a ttl: the same.
    s.send(Message(body="absolute", expiry_time=time.time() + 0.2))
    s.send(Message(body="later", expiry_time=time.time() + 600))
    time.sleep(0.5)
    r = c.create_receiver(q, credit=5)
    m = r.receive(timeout=10)
    assert m.body == "later", m.body
    r.accept()
    c.close()
    ok("message ttl and absolute-expiry-time: an expired message is not delivered")


def detach_returns_unsettled():
    """A consumer that detaches with deliveries unsettled gives them back: the next consumer
    gets them (and what it settles is gone)."""
    q = name("giveback")
    c = connect()
    s = c.create_sender(q)
    for body in ("A", "B", "C"):
        s.send(Message(body=body))
    r = c.create_receiver(q, credit=3, name="leaver")
    got = [r.receive(timeout=10).body for _ in range(3)]
    assert got == ["A", "B", "C"], got
    r.accept()  # settles A only (the oldest unsettled delivery)
    # Attached before the other leaves, so the queue keeps being served (not restarted).
    other = c.create_receiver(q, credit=0, name="stayer")
    r.close()
    back = []
    for _ in range(2):
        back.append(other.receive(timeout=10).body)
        other.accept()
    assert back == ["B", "C"], back
    nothing_more(other, "delivered again after accept")
    c.close()
    ok("a detaching consumer gives its unsettled deliveries back; accepted ones stay gone")


class RcvSecond(LinkOption):
    """Ask for receiver settle mode second."""

    def apply(self, link):
        link.rcv_settle_mode = Link.RCV_SECOND


def settlement_modes():
    q = name("presettled")
    c = connect()
    s = c.create_sender(q, options=AtMostOnce())
    for i in range(5):
        s.send(Message(body=i))
    # A pre-settled consumer (snd-settle-mode settled): messages come settled and are gone.
    r = c.create_receiver(q, credit=5, name="at-most-once", options=AtMostOnce())
    got = []
    for _ in range(5):
        m = r.receive(timeout=10)
        got.append(m.body)
    assert got == list(range(5)), got
    assert not r.fetcher.unsettled, "deliveries came unsettled"
    r.close()
    again = c.create_receiver(q, credit=5, name="after")
    try:
        m = again.receive(timeout=1)
        raise AssertionError(f"a pre-settled delivery came again: {m.body}")
    except AssertionError:
        raise
    except Exception:
        pass
    again.close()
    # rcv-settle-mode second: granted where we send, downgraded to first where we receive.
    rr = c.create_receiver(q, credit=1, name="second", options=RcvSecond())
    assert rr.link.remote_rcv_settle_mode == Link.RCV_SECOND, rr.link.remote_rcv_settle_mode
    ss = c.create_sender(q, name="second-sender", options=RcvSecond())
    assert ss.link.remote_rcv_settle_mode == Link.RCV_FIRST, ss.link.remote_rcv_settle_mode
    ss.send(Message(body="second"))
    assert rr.receive(timeout=10).body == "second"
    rr.accept()
    c.close()
    ok("settlement: pre-settled both ways; rcv-settle-mode second granted / downgraded")


def sasl():
    c = BlockingConnection(URL, timeout=10, user=USER, password=PASSWORD, allowed_mechs="PLAIN")
    c.create_sender(name("sasl")).send(Message(body="hi"))
    c.close()
    try:
        BlockingConnection(URL, timeout=10, user=USER, password="wrong", allowed_mechs="PLAIN")
        raise AssertionError("bad password accepted")
    except ConnectionException as e:
        assert "auth" in str(e).lower(), e
    c = BlockingConnection(URL, timeout=10, sasl_enabled=False)
    c.close()
    ok("SASL PLAIN good and bad password, no-SASL on loopback")


def strict():
    c = BlockingConnection(f"amqp://127.0.0.1:{STRICT}", timeout=10)
    try:
        c.create_receiver("nowhere", credit=1)
        raise AssertionError("attach to an unknown address accepted")
    except (LinkDetached, LinkException) as e:
        assert "amqp:not-found" in str(e), e
    try:
        c.create_sender("nowhere")
        raise AssertionError("attach to an unknown address accepted")
    except (LinkDetached, LinkException) as e:
        assert "amqp:not-found" in str(e), e
    # A name whose stream would be another address's ('~' is what '/' becomes) is not an
    # address: amqp:invalid-field, not an internal error.
    for bad in ("tenants~acme~q9", "a~b"):
        try:
            c.create_receiver(bad, credit=1)
            raise AssertionError(f"attach to {bad!r} accepted")
        except (LinkDetached, LinkException) as e:
            assert "amqp:invalid-field" in str(e), e
    c.create_sender("declared").send(Message(body="here"))
    r = c.create_receiver("declared", credit=1)
    assert r.receive(timeout=10).body == "here"
    r.accept()
    # Declared with max_delivery 2 and dead_letter "orders.dlq": two failed deliveries, then
    # the dead-letter queue; a rejected message goes there at once.
    s = c.create_sender("orders")
    s.send(Message(body="poison"))
    s.send(Message(body="refused"))
    r = c.create_receiver("orders", credit=0, name="orders-consumer")
    for attempt in range(2):
        m = r.receive(timeout=10)
        assert (m.body, m.delivery_count) == ("poison", attempt), (m.body, m.delivery_count)
        r.fetcher.unsettled[0].local.failed = True
        r.settle(Delivery.MODIFIED)
    m = r.receive(timeout=10)
    assert m.body == "refused", m.body
    r.reject()
    dlq = c.create_receiver("orders.dlq", credit=10)
    got = sorted(dlq.receive(timeout=10).body for _ in range(2))
    assert got == ["poison", "refused"], got
    dlq.accept()
    dlq.accept()
    c.close()
    ok("unknown address refused with amqp:not-found, '~' in a name with amqp:invalid-field; declared address served; max_delivery and dead-letter")


def message_size_exceeded():
    """Over the strict adapter's max-message-size (64 KiB): the sending link is detached with
    amqp:link:message-size-exceeded, the message is not stored, and a smaller one still is."""
    c = BlockingConnection(f"amqp://127.0.0.1:{STRICT}", timeout=10)
    s = c.create_sender("declared")
    try:
        s.send(Message(body=b"x" * 100_000))
        raise AssertionError("a message over max-message-size was accepted")
    except (LinkDetached, LinkException, SendException) as e:
        assert "amqp:link:message-size-exceeded" in str(e), e
    c.create_sender("declared").send(Message(body=b"y" * 1000))
    r = c.create_receiver("declared", credit=5)
    m = r.receive(timeout=10)
    r.accept()
    assert m.body == b"y" * 1000, len(m.body)
    nothing_more(r, "more was stored")
    c.close()
    ok("over max-message-size: link detached with amqp:link:message-size-exceeded, nothing stored")


for scenario in (send_receive, competing_consumers, fan_out, request_response, outcomes,
                 credit_and_drain, large_messages, property_round_trip, ttl_expiry, detach_returns_unsettled,
                 settlement_modes,
                 sasl, strict, message_size_exceeded):
    scenario()
print("all passed")
