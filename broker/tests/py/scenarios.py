"""Interop scenarios driven by stomp.py against a running portico-broker.

Usage: scenarios.py SCENARIO HOST PORT CA_FILE
Exits 0 and prints "ok SCENARIO" when every assertion holds.
"""
import ssl
import sys
import threading
import time

import stomp

DEADLINE = 10.0


class Collector(stomp.ConnectionListener):
    def __init__(self):
        self.messages = []
        self.receipts = set()
        self.errors = []
        self.cond = threading.Condition()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def wait(self, what, predicate):
        end = time.monotonic() + DEADLINE
        with self.cond:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.cond.wait(left)

    def wait_messages(self, n):
        self.wait(f"{n} messages (have {len(self.messages)})", lambda: len(self.messages) >= n)

    def wait_receipt(self, r):
        self.wait(f"receipt {r}", lambda: r in self.receipts)


def connect(host, port, ca, heartbeats=(0, 0), connect_headers=None, **kw):
    conn = stomp.Connection12([(host, port)], heartbeats=heartbeats, **kw)
    conn.set_ssl(for_hosts=[(host, port)], ca_certs=ca, ssl_version=ssl.PROTOCOL_TLS_CLIENT)
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(wait=True, headers=connect_headers or {})
    return conn, listener


def bodies(frames):
    return [f.body for f in frames]


def queue_send_receive(host, port, ca):
    conn, l = connect(host, port, ca)
    conn.subscribe("/queue/interop.q", id="s1", ack="auto")
    for i in range(20):
        conn.send("/queue/interop.q", f"m{i}", headers={"persistent": "true"}, receipt=f"r{i}")
    l.wait_receipt("r19")
    l.wait_messages(20)
    assert bodies(l.messages) == [f"m{i}" for i in range(20)], bodies(l.messages)
    assert all(m.headers["destination"] == "/queue/interop.q" for m in l.messages)
    assert all(m.headers["subscription"] == "s1" for m in l.messages)
    assert len({m.headers["message-id"] for m in l.messages}) == 20
    conn.disconnect(receipt="bye")


def topic_fanout(host, port, ca):
    a, la = connect(host, port, ca)
    b, lb = connect(host, port, ca)
    a.subscribe("/topic/interop.t", id="a", receipt="sa")
    b.subscribe("/topic/interop.t", id="b", receipt="sb")
    la.wait_receipt("sa")
    lb.wait_receipt("sb")
    for i in range(5):
        a.send("/topic/interop.t", f"t{i}")
    la.wait_messages(5)
    lb.wait_messages(5)
    assert bodies(la.messages) == bodies(lb.messages) == [f"t{i}" for i in range(5)]
    a.disconnect()
    b.disconnect()


def client_ack_is_cumulative(host, port, ca):
    conn, l = connect(host, port, ca)
    q = "/queue/interop.client"
    for i in range(4):
        conn.send(q, f"c{i}", receipt=f"r{i}")
    l.wait_receipt("r3")
    conn.subscribe(q, id="s", ack="client")
    l.wait_messages(4)
    # Acknowledging the third acknowledges the first three.
    conn.ack(l.messages[2].headers["ack"], receipt="acked")
    l.wait_receipt("acked")
    conn.disconnect()
    # The unacknowledged fourth is redelivered to the next consumer.
    conn2, l2 = connect(host, port, ca)
    conn2.subscribe(q, id="s", ack="client-individual")
    l2.wait_messages(1)
    time.sleep(0.2)
    assert bodies(l2.messages) == ["c3"], bodies(l2.messages)
    assert l2.messages[0].headers.get("redelivered") == "true"
    conn2.ack(l2.messages[0].headers["ack"], receipt="done")
    l2.wait_receipt("done")
    conn2.disconnect()


def client_individual_and_nack(host, port, ca):
    conn, l = connect(host, port, ca)
    q = "/queue/interop.individual"
    conn.subscribe(q, id="s", ack="client-individual")
    for i in range(3):
        conn.send(q, f"i{i}")
    l.wait_messages(3)
    # Ack the last only; NACK the first: it comes back, redelivered.
    conn.ack(l.messages[2].headers["ack"])
    conn.nack(l.messages[0].headers["ack"], receipt="nacked")
    l.wait_receipt("nacked")
    l.wait_messages(4)
    again = l.messages[3]
    assert again.body == "i0" and again.headers.get("redelivered") == "true", again.headers
    conn.ack(again.headers["ack"])
    conn.ack(l.messages[1].headers["ack"], receipt="all")
    l.wait_receipt("all")
    conn.disconnect()


def client_nack_is_cumulative(host, port, ca):
    """STOMP 1.2: in `client` mode a NACK, like an ACK, covers the message
    named and every one delivered before it on that subscription. They come
    back, in order, after the redelivery delay (1 s by default); meanwhile
    the next message takes their place in the window."""
    conn, l = connect(host, port, ca)
    q = "/queue/interop.client.nack"
    for i in range(3):
        conn.send(q, f"n{i}", receipt=f"r{i}")
    l.wait_receipt("r2")
    conn.subscribe(q, id="s", ack="client", headers={"activemq.prefetchSize": "2"})
    l.wait_messages(2)
    # NACK the second: the first and the second come back, in order.
    conn.nack(l.messages[1].headers["ack"], receipt="nacked")
    l.wait_receipt("nacked")
    l.wait_messages(3)
    assert l.messages[2].body == "n2", bodies(l.messages)
    assert l.messages[2].headers.get("redelivered") is None, l.messages[2].headers
    conn.ack(l.messages[2].headers["ack"], receipt="acked")
    l.wait_receipt("acked")
    l.wait_messages(5)
    again = l.messages[3:5]
    assert bodies(again) == ["n0", "n1"], bodies(l.messages)
    assert all(m.headers.get("redelivered") == "true" for m in again), [m.headers for m in again]
    conn.ack(l.messages[4].headers["ack"], receipt="done")
    l.wait_receipt("done")
    conn.disconnect(receipt="bye")


def stomp10_headers_are_not_escaped(host, port, ca):
    """A STOMP 1.0 session has no header escaping, both ways: stomp.py's
    1.0 connection sends and reads backslashes and colons as they are."""
    conn = stomp.Connection10([(host, port)])
    conn.set_ssl(for_hosts=[(host, port)], ca_certs=ca, ssl_version=ssl.PROTOCOL_TLS_CLIENT)
    l = Collector()
    conn.set_listener("collector", l)
    conn.connect(wait=True)
    q = "/queue/interop.ten"
    conn.subscribe(q, ack="auto")
    conn.send(q, "ten", headers={"path": "C:\\dir\\x", "note": "a:b"}, receipt="sent")
    l.wait_receipt("sent")
    l.wait_messages(1)
    m = l.messages[0]
    assert m.headers["path"] == "C:\\dir\\x", m.headers
    assert m.headers["note"] == "a:b", m.headers
    assert m.headers["message-id"].startswith("ID:"), m.headers
    assert "\\c" not in m.headers["message-id"], m.headers
    conn.disconnect(receipt="bye")


def transactions(host, port, ca):
    conn, l = connect(host, port, ca)
    q = "/queue/interop.tx"
    conn.subscribe(q, id="s", ack="client-individual")
    tx = conn.begin()
    conn.send(q, "in-tx-1", transaction=tx)
    conn.send(q, "in-tx-2", transaction=tx)
    conn.send(q, "plain", receipt="plain")
    l.wait_receipt("plain")
    l.wait_messages(1)
    time.sleep(0.2)
    assert bodies(l.messages) == ["plain"], "transactional sends must wait for COMMIT"
    conn.commit(tx)
    l.wait_messages(3)
    assert bodies(l.messages) == ["plain", "in-tx-1", "in-tx-2"], bodies(l.messages)
    aborted = conn.begin()
    conn.send(q, "aborted", transaction=aborted)
    conn.abort(aborted)
    # Acks inside a transaction take effect on commit.
    tx2 = conn.begin()
    for m in l.messages:
        conn.ack(m.headers["ack"], transaction=tx2)
    conn.commit(tx2)
    conn.send(q, "after", receipt="after")
    l.wait_messages(4)
    assert bodies(l.messages)[3] == "after", bodies(l.messages)
    conn.ack(l.messages[3].headers["ack"], receipt="fin")
    l.wait_receipt("fin")
    conn.disconnect()


def receipts_and_errors(host, port, ca):
    conn, l = connect(host, port, ca)
    conn.send("/queue/interop.r", "x", receipt="send-receipt")
    l.wait_receipt("send-receipt")
    conn.send("not-a-destination", "x", receipt="bad")
    l.wait("an ERROR frame", lambda: l.errors)
    err = l.errors[0]
    assert err.headers.get("receipt-id") == "bad", err.headers
    assert "destination" in err.headers.get("message", ""), err.headers


def heart_beats(host, port, ca):
    conn, l = connect(host, port, ca, heartbeats=(500, 500))
    # Stay idle for several intervals: heart-beats keep the connection up.
    time.sleep(2.5)
    assert conn.is_connected(), "the broker dropped a heart-beating client"
    conn.send("/queue/interop.hb", "alive", receipt="alive")
    l.wait_receipt("alive")
    conn.disconnect()


def selectors(host, port, ca):
    """JMS selectors on SUBSCRIBE: two consumers of one queue each get
    what they select; a bad selector gets an ERROR naming the position."""
    red, lr = connect(host, port, ca)
    blue, lb = connect(host, port, ca)
    q = "/queue/interop.selectors"
    red.subscribe(q, id="r", ack="auto", headers={"selector": "colour = 'red' AND size > 2"})
    blue.subscribe(q, id="b", ack="auto", headers={"selector": "colour IN ('blue', 'navy')"},
                   receipt="ready")
    lb.wait_receipt("ready")
    sender, ls = connect(host, port, ca)
    for i, (colour, size) in enumerate([("red", 3), ("blue", 1), ("red", 1), ("navy", 9), ("red", 5)]):
        sender.send(q, f"m{i}", headers={"colour": colour, "size": str(size)}, receipt=f"s{i}")
    ls.wait_receipt("s4")
    lr.wait_messages(2)
    lb.wait_messages(2)
    assert bodies(lr.messages) == ["m0", "m4"], bodies(lr.messages)
    assert bodies(lb.messages) == ["m1", "m3"], bodies(lb.messages)
    bad, lx = connect(host, port, ca)
    bad.subscribe(q, id="x", headers={"selector": "colour = = 'red'"})
    lx.wait("an ERROR", lambda: lx.errors)
    message = lx.errors[0].headers.get("message", "")
    assert "position 10" in message, message
    for c in (red, blue, sender):
        c.disconnect()


def durable_subscriber(host, port, ca):
    """A durable topic subscriber (client-id on CONNECT, activemq.subscriptionName
    on SUBSCRIBE) gets, when it comes back, the persistent messages published
    while it was away; UNSUBSCRIBE with the name removes the subscription."""
    t = "/topic/interop.durable"
    durable = {"activemq.subscriptionName": "py-sub"}
    sub, ls = connect(host, port, ca, connect_headers={"client-id": "py-client"})
    sub.subscribe(t, id="d", ack="client-individual", headers=durable, receipt="ready")
    ls.wait_receipt("ready")
    sub.disconnect(receipt="bye")
    sender, lp = connect(host, port, ca)
    for i in range(5):
        sender.send(t, f"away{i}", headers={"persistent": "true"}, receipt=f"p{i}")
    lp.wait_receipt("p4")
    back, lb = connect(host, port, ca, connect_headers={"client-id": "py-client"})
    back.subscribe(t, id="d", ack="client-individual", headers=durable)
    lb.wait_messages(5)
    assert bodies(lb.messages) == [f"away{i}" for i in range(5)], bodies(lb.messages)
    assert all(m.headers["destination"] == t for m in lb.messages)
    for m in lb.messages:
        back.ack(m.headers["ack"])
    back.unsubscribe(id="d", headers=durable, receipt="removed")
    lb.wait_receipt("removed")
    sender.send(t, "nobody", headers={"persistent": "true"}, receipt="after")
    lp.wait_receipt("after")
    back.disconnect(receipt="bye")
    again, la = connect(host, port, ca, connect_headers={"client-id": "py-client"})
    again.subscribe(t, id="d", headers=durable, receipt="fresh")
    la.wait_receipt("fresh")
    sender.send(t, "new", receipt="n")
    la.wait_messages(1)
    assert bodies(la.messages) == ["new"], bodies(la.messages)
    for c in (again, sender):
        c.disconnect()


SCENARIOS = {f.__name__: f for f in [
    selectors, durable_subscriber,
    queue_send_receive, topic_fanout, client_ack_is_cumulative,
    client_individual_and_nack, client_nack_is_cumulative, stomp10_headers_are_not_escaped,
    transactions, receipts_and_errors, heart_beats,
]}

if __name__ == "__main__":
    name, host, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    SCENARIOS[name](host, port, ca)
    print(f"ok {name}")
