"""MQTT scenarios with paho-mqtt (and stomp.py for the mapping), against a
broker: python3 mqtt_scenarios.py SCENARIO HOST MQTT_PORT STOMP_PORT.
Prints "ok SCENARIO" when every check holds; exits non-zero otherwise."""

import queue
import socket
import sys
import threading

import paho.mqtt.client as mqtt

WAIT = 10


def client(host, port, client_id, clean=True, user=None, password=None, will=None, keepalive=30):
    """A connected paho client whose messages land in client.got; the
    CONNACK's flags and reason in client.connack."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.got = queue.Queue()
    c.connack = queue.Queue()
    c.subacks = queue.Queue()
    if user is not None:
        c.username_pw_set(user, password)
    if will is not None:
        c.will_set(*will)
    c.on_connect = lambda cl, u, flags, rc, props: c.connack.put((flags, rc))
    c.on_message = lambda cl, u, m: c.got.put(m)
    c.on_subscribe = lambda cl, u, mid, codes, props: c.subacks.put(codes)
    c.connect(host, port, keepalive)
    c.loop_start()
    return c


def connected(c):
    flags, rc = c.connack.get(timeout=WAIT)
    assert not rc.is_failure, f"refused: {rc}"
    return flags


def subscribe(c, topic, qos):
    c.subscribe(topic, qos)
    codes = c.subacks.get(timeout=WAIT)
    assert all(not code.is_failure for code in codes), f"SUBACK {codes}"
    return codes


def receive(c, n):
    got = []
    for _ in range(n):
        got.append(c.got.get(timeout=WAIT))
    return got


def nothing_more(c):
    try:
        m = c.got.get(timeout=0.5)
    except queue.Empty:
        return
    raise AssertionError(f"an unexpected message on {m.topic}: {m.payload!r}")


def stop(c):
    c.disconnect()
    c.loop_stop()


def pubsub(host, port, _stomp):
    sub = client(host, port, "sub-1")
    connected(sub)
    codes = subscribe(sub, "sensors/+/temp", 1)
    assert codes[0].value == 1, f"granted {codes}"
    pub = client(host, port, "pub-1")
    connected(pub)
    pub.publish("sensors/hall/temp", b"21.5", qos=0).wait_for_publish(WAIT)
    pub.publish("sensors/roof/temp", b"19.0", qos=1).wait_for_publish(WAIT)
    pub.publish("sensors/hall/humidity", b"40", qos=1).wait_for_publish(WAIT)
    got = sorted((m.topic, m.payload) for m in receive(sub, 2))
    assert got == [("sensors/hall/temp", b"21.5"), ("sensors/roof/temp", b"19.0")], got
    nothing_more(sub)
    # '#' takes everything below.
    subscribe(sub, "sensors/#", 0)
    pub.publish("sensors/hall/humidity", b"41", qos=1).wait_for_publish(WAIT)
    m = sub.got.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("sensors/hall/humidity", b"41"), (m.topic, m.payload)
    # QoS 2 is taken exactly once.
    pub.publish("sensors/hall/temp", b"22.0", qos=2).wait_for_publish(WAIT)
    got = [(m.topic, m.payload) for m in receive(sub, 2)]
    assert got == [("sensors/hall/temp", b"22.0")] * 2, got  # both filters match
    stop(pub)
    stop(sub)


def wrong_password(host, port, _stomp):
    c = client(host, port, "intruder", user="device", password="wrong")
    _flags, rc = c.connack.get(timeout=WAIT)
    assert rc.is_failure, f"accepted: {rc}"
    assert "password" in str(rc).lower() or "not authorized" in str(rc).lower(), str(rc)
    c.loop_stop()
    ok = client(host, port, "device-1", user="device", password="device-secret")
    connected(ok)
    stop(ok)


def will(host, port, _stomp):
    watcher = client(host, port, "watcher")
    connected(watcher)
    subscribe(watcher, "clients/+/status", 1)
    # A client that vanishes without DISCONNECT: its will is published.
    raw = socket.create_connection((host, port))
    body = b"\x00\x04MQTT\x04" + bytes([0x04 | 0x08 | 0x02]) + b"\x00\x3c"
    body += b"\x00\x06gone-1" + b"\x00\x10clients/1/status" + b"\x00\x04lost"
    raw.sendall(bytes([0x10, len(body)]) + body)
    assert raw.recv(4)[:2] == b"\x20\x02", "CONNACK"
    raw.close()
    m = watcher.got.get(timeout=WAIT)
    assert (m.topic, m.payload, m.qos) == ("clients/1/status", b"lost", 1), (m.topic, m.payload, m.qos)
    # A client silent past 1.5 x its keep-alive (1 s) is gone: its will too.
    silent = socket.create_connection((host, port))
    body = b"\x00\x04MQTT\x04" + bytes([0x04 | 0x08 | 0x02]) + b"\x00\x01"
    body += b"\x00\x08silent-1" + b"\x00\x10clients/3/status" + b"\x00\x06silent"
    silent.sendall(bytes([0x10, len(body)]) + body)
    assert silent.recv(4)[:2] == b"\x20\x02", "CONNACK"
    m = watcher.got.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("clients/3/status", b"silent"), (m.topic, m.payload)
    silent.settimeout(WAIT)
    assert silent.recv(4) == b"", "the silent client's connection is closed"
    silent.close()
    # One that says DISCONNECT: no will.
    polite = client(host, port, "polite", will=("clients/2/status", b"lost", 1))
    connected(polite)
    stop(polite)
    nothing_more(watcher)
    stop(watcher)


def retained(host, port, _stomp):
    """The last RETAIN message of a topic goes to each new subscriber
    (RETAIN set); a newer one replaces it, an empty one clears it, and a
    subscriber already there gets it as an ordinary message."""
    pub = client(host, port, "light-switch")
    connected(pub)
    pub.publish("lights/kitchen", b"on", qos=1, retain=True).wait_for_publish(WAIT)
    # QoS 1: answered once the broker has it (a QoS 0 one might still be on
    # its way when the subscriber subscribes, and reach it twice).
    pub.publish("lights/hall", b"on", qos=1, retain=True).wait_for_publish(WAIT)
    first = client(host, port, "panel-1")
    connected(first)
    subscribe(first, "lights/+", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in receive(first, 2))
    assert got == [("lights/hall", b"on", True), ("lights/kitchen", b"on", True)], got
    pub.publish("lights/kitchen", b"off", qos=1, retain=True).wait_for_publish(WAIT)
    m = first.got.get(timeout=WAIT)
    assert (m.topic, m.payload, m.retain) == ("lights/kitchen", b"off", False), (m.topic, m.payload, m.retain)
    pub.publish("lights/hall", b"", qos=1, retain=True).wait_for_publish(WAIT)
    m = first.got.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("lights/hall", b""), (m.topic, m.payload)
    second = client(host, port, "panel-2")
    connected(second)
    subscribe(second, "lights/#", 1)
    m = second.got.get(timeout=WAIT)
    assert (m.topic, m.payload, m.retain) == ("lights/kitchen", b"off", True), (m.topic, m.payload, m.retain)
    nothing_more(second)
    for c in (pub, first, second):
        stop(c)


def persist_subscribe(host, port, _stomp):
    """A persistent session subscribes and goes away."""
    c = client(host, port, "device-7", clean=False)
    flags = connected(c)
    subscribe(c, "alerts/#", 1)
    stop(c)


def persist_publish(host, port, _stomp):
    pub = client(host, port, "alarm-panel")
    connected(pub)
    for i in range(5):
        pub.publish(f"alerts/zone{i}", f"alert {i}".encode(), qos=1).wait_for_publish(WAIT)
    pub.publish("status/panel", b"armed", qos=1, retain=True).wait_for_publish(WAIT)
    stop(pub)


def persist_receive(host, port, _stomp):
    """The persistent session comes back: its subscription is there and
    what was published while it was away arrives."""
    c = client(host, port, "device-7", clean=False)
    flags = connected(c)
    assert flags.session_present, "session present"
    got = sorted(m.payload.decode() for m in receive(c, 5))
    assert got == [f"alert {i}" for i in range(5)], got
    nothing_more(c)
    stop(c)
    # A clean session drops it.
    clean = client(host, port, "device-7", clean=True)
    flags = connected(clean)
    assert not flags.session_present
    stop(clean)
    again = client(host, port, "device-7", clean=False)
    flags = connected(again)
    assert not flags.session_present, "the clean session dropped the old one"
    # The retained message was kept too.
    subscribe(again, "status/#", 1)
    m = again.got.get(timeout=WAIT)
    assert (m.topic, m.payload, m.retain) == ("status/panel", b"armed", True), (m.topic, m.payload)
    stop(again)


def mapping(host, port, stomp_port):
    """MQTT a/b/c is topic://a.b.c both ways (STOMP's /topic/a.b.c)."""
    import stomp

    sub = client(host, port, "map-sub")
    connected(sub)
    subscribe(sub, "sensors/+/temp", 1)
    conn = stomp.Connection12([(host, stomp_port)])
    heard = queue.Queue()
    receipts = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            heard.put(frame)

        def on_receipt(self, frame):
            receipts.put(frame)

    conn.set_listener("l", Listener())
    conn.connect(wait=True)
    conn.send("/topic/sensors.hall.temp", "from stomp")
    m = sub.got.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("sensors/hall/temp", b"from stomp"), (m.topic, m.payload)
    conn.subscribe("/topic/devices.>", id="1", ack="auto", headers={"receipt": "subscribed"})
    receipts.get(timeout=WAIT)
    sub.publish("devices/d1/up", b"from mqtt", qos=1).wait_for_publish(WAIT)
    frame = heard.get(timeout=WAIT)
    assert frame.headers["destination"] == "/topic/devices.d1.up", frame.headers
    assert frame.body == "from mqtt", frame.body
    conn.disconnect()
    stop(sub)


def violations(host, port, _stomp):
    """A second CONNECT, a wildcard in a PUBLISH topic, wrong flags, an
    unsupported protocol level: the connection is closed (CONNACK 1 for the
    level), and a client beside them is not disturbed."""
    bystander = client(host, port, "bystander")
    connected(bystander)
    subscribe(bystander, "ok/#", 0)
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 60, 0, 0])

    def closed_after(extra, expect=None):
        raw = socket.create_connection((host, port))
        raw.settimeout(WAIT)
        raw.sendall(connect)
        assert raw.recv(4) == b"\x20\x02\x00\x00", "CONNACK"
        raw.sendall(extra)
        got = b""
        while True:
            chunk = raw.recv(64)
            if not chunk:
                break
            got += chunk
        raw.close()
        return got

    closed_after(connect)  # a second CONNECT
    closed_after(bytes([0x30, 5, 0, 3]) + b"a/+")  # a wildcard in a topic name
    closed_after(bytes([0x80, 6, 0, 1, 0, 1]) + b"a" + bytes([0]))  # SUBSCRIBE with flags 0000
    raw = socket.create_connection((host, port))
    raw.settimeout(WAIT)
    raw.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([5, 0x02, 0, 60, 0, 0]))
    assert raw.recv(4) == b"\x20\x02\x00\x01", "CONNACK 1: unacceptable protocol version"
    assert raw.recv(4) == b"", "then closed"
    raw.close()
    bystander.publish("ok/still", b"here", qos=1).wait_for_publish(WAIT)
    m = bystander.got.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("ok/still", b"here")
    stop(bystander)


def takeover(host, port, _stomp):
    """A second connection with a client id takes over from the first."""
    first = client(host, port, "same-id")
    connected(first)
    gone = threading.Event()
    first.on_disconnect = lambda *a: gone.set()
    second = client(host, port, "same-id")
    connected(second)
    assert gone.wait(WAIT), "the first connection was closed"
    first.loop_stop()
    stop(second)


SCENARIOS = {
    f.__name__: f
    for f in [pubsub, wrong_password, will, retained, persist_subscribe, persist_publish, persist_receive, mapping, takeover, violations]
}

if __name__ == "__main__":
    name, host, port, stomp_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    SCENARIOS[name](host, port, stomp_port)
    print(f"ok {name}")
