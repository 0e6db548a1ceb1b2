"""STOMP over WebSocket with clients from PyPI: stomp.py's WSStompConnection
and websocket-client. python3 ws_scenarios.py SCENARIO HOST WS_PORT WSS_PORT CA.
Prints "ok SCENARIO" when every check holds; exits non-zero otherwise."""

import queue
import ssl
import sys

import stomp
import websocket
from stomp.adapter.ws import WSStompConnection

WAIT = 10


def stomp_py(host, ws_port, wss_port, ca):
    """stomp.py over ws:// and wss://: the same sessions as over TCP."""
    for port, tls in ((ws_port, False), (wss_port, True)):
        stomp_py_once(host, port, tls, ca)


def stomp_py_once(host, port, tls, ca):
    got = queue.Queue()
    receipts = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            got.put(frame)

        def on_receipt(self, frame):
            receipts.put(frame.headers["receipt-id"])

    conn = WSStompConnection([(host, port)], ws_path="/stomp")
    if tls:
        conn.set_ssl(for_hosts=[(host, port)], ca_certs=ca, ssl_version=ssl.PROTOCOL_TLS_CLIENT)
    conn.set_listener("l", Listener())
    conn.connect(wait=True)
    queue_name = f"/queue/ws.{port}"
    conn.subscribe(queue_name, id="1", ack="client-individual", headers={"receipt": "sub"})
    assert receipts.get(timeout=WAIT) == "sub"
    for i in range(3):
        conn.send(queue_name, f"hello {i}", headers={"receipt": f"r{i}"})
        assert receipts.get(timeout=WAIT) == f"r{i}"
    for i in range(3):
        frame = got.get(timeout=WAIT)
        assert frame.body == f"hello {i}", frame.body
        conn.ack(frame.headers["ack"])
    conn.disconnect()


def one_frame_per_message(host, ws_port, _wss_port, _ca):
    """The highest STOMP subprotocol offered is chosen, and each frame the
    broker sends is one WebSocket message of its own."""
    ws = websocket.create_connection(f"ws://{host}:{ws_port}/", subprotocols=["v10.stomp", "v11.stomp", "v12.stomp"], timeout=WAIT)
    assert ws.getsubprotocol() == "v12.stomp", ws.getsubprotocol()
    ws.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    connected = ws.recv()
    assert connected.startswith("CONNECTED\n") and connected.endswith("\0"), repr(connected)
    # Two frames in one message, and one frame split over two messages.
    ws.send("SUBSCRIBE\ndestination:/topic/ws\nid:1\nreceipt:s\n\n\0SEND\ndestination:/topic/ws\nreceipt:p\n\nfirst\0")
    ws.send("SEND\ndestination:/topic/ws\n")
    ws.send("\nsecond\0")
    messages = [ws.recv() for _ in range(4)]
    kinds = sorted(m.split("\n", 1)[0] for m in messages)
    assert kinds == ["MESSAGE", "MESSAGE", "RECEIPT", "RECEIPT"], messages
    bodies = [m.split("\n\n", 1)[1] for m in messages if m.startswith("MESSAGE")]
    assert bodies == ["first\0", "second\0"], bodies
    assert all(m.count("\0") == 1 and m.endswith("\0") for m in messages), messages
    ws.close()


def bad_frames(host, ws_port, _wss_port, _ca):
    """An unmasked client frame, and a frame over the size limit: the
    connection is closed (a clean client beside them is not disturbed)."""
    import base64
    import os
    import socket

    bystander = websocket.create_connection(f"ws://{host}:{ws_port}/", timeout=WAIT)
    bystander.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    assert bystander.recv().startswith("CONNECTED")

    def upgraded():
        raw = socket.create_connection((host, ws_port))
        raw.settimeout(WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall((f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    def closed(raw):
        while True:
            try:
                chunk = raw.recv(4096)
            except ConnectionResetError:
                return
            if not chunk:
                return

    # Unmasked text frame: "CONNECT".
    raw = upgraded()
    raw.sendall(bytes([0x81, 7]) + b"CONNECT")
    closed(raw)
    # A masked binary frame that claims 2^40 bytes.
    raw = upgraded()
    raw.sendall(bytes([0x82, 0xFF]) + (1 << 40).to_bytes(8, "big") + os.urandom(4) + b"x" * 1024)
    closed(raw)
    bystander.send("SEND\ndestination:/queue/still\nreceipt:r\n\nhere\0")
    assert bystander.recv().startswith("RECEIPT"), "still served"
    bystander.close()


SCENARIOS = {f.__name__: f for f in [stomp_py, one_frame_per_message, bad_frames]}

if __name__ == "__main__":
    name, host, ws_port, wss_port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    SCENARIOS[name](host, ws_port, wss_port, ca)
    print(f"ok {name}")
