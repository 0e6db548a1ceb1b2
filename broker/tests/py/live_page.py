"""Drives the console's live page in headless Chromium (Debian's chromium)
over the DevTools protocol: python3 live_page.py PROFILE URL COUNT SCREENSHOT.
Prints "subscribed" once the page watches its destination, then, once COUNT
messages are on the page, their bodies as JSON (newest first), and leaves a
screenshot for a person to look at."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import websocket

WAIT = 30


def main(profile, url, count, screenshot):
    browser = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--window-size=1280,900", "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run(profile, count, screenshot)
    finally:
        browser.kill()
        browser.wait()


def until(what, check):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {WAIT} s")


def run(profile, count, screenshot):
    active = os.path.join(profile, "DevToolsActivePort")
    port = until("Chromium's DevTools port", lambda: os.path.exists(active)
                 and open(active).read().split("\n")[0].strip())
    pages = until("a page", lambda: [t for t in json.load(urllib.request.urlopen(
        f"http://127.0.0.1:{port}/json")) if t["type"] == "page"])
    devtools = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=WAIT)
    ids = iter(range(1, 1 << 30))

    def call(method, **params):
        n = next(ids)
        devtools.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            answer = json.loads(devtools.recv())
            if answer.get("id") == n:
                return answer.get("result", {})

    def evaluate(expression):
        result = call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    until("the page watching its destination", lambda: (evaluate(
        "document.getElementById('status') && document.getElementById('status').textContent") or ""
    ).startswith("watching"))
    print("subscribed", flush=True)
    until(f"{count} messages on the page", lambda: (evaluate(
        "document.querySelectorAll('#messages tbody tr').length") or 0) >= count)
    bodies = evaluate("[...document.querySelectorAll('#messages tbody tr')].map(r => r.lastChild.textContent)")
    shot = call("Page.captureScreenshot", format="png")
    with open(screenshot, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    print(json.dumps(bodies), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
