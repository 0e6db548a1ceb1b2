// The console's live page: watches a queue or topic over STOMP on
// WebSocket with @stomp/stompjs, newest message first.
(function () {
  "use strict";
  const root = document.getElementById("live");
  const wsUrl = root.dataset.ws;
  const form = document.getElementById("watch");
  const status = document.getElementById("status");
  const rows = document.querySelector("#messages tbody");
  const empty = document.getElementById("empty");
  const MAX_ROWS = 500;
  let client = null;

  function say(text) {
    status.textContent = text;
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function add(message) {
    empty.hidden = true;
    const tr = document.createElement("tr");
    tr.append(
      cell(new Date().toLocaleTimeString()),
      cell(message.headers.destination || ""),
      cell(message.headers["message-id"] || ""),
      cell(message.body)
    );
    rows.prepend(tr);
    while (rows.children.length > MAX_ROWS) {
      rows.lastChild.remove();
    }
  }

  function watch(destination, login, passcode) {
    if (client) {
      client.deactivate();
    }
    const connectHeaders = {};
    if (login) {
      connectHeaders.login = login;
      connectHeaders.passcode = passcode;
    }
    client = new StompJs.Client({
      brokerURL: wsUrl,
      connectHeaders: connectHeaders,
      reconnectDelay: 2000,
      onConnect: function () {
        client.subscribe(destination, add);
        say("watching " + destination);
      },
      onStompError: function (frame) {
        say("refused: " + (frame.headers.message || "error"));
      },
      onWebSocketClose: function () {
        say("disconnected; trying again");
      },
    });
    say("connecting to " + wsUrl);
    client.activate();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const destination = form.destination.value.trim();
    if (!destination) {
      return;
    }
    history.replaceState(null, "", "?destination=" + encodeURIComponent(destination));
    watch(destination, form.login.value, form.passcode.value);
  });

  const initial = new URLSearchParams(location.search).get("destination");
  if (initial && wsUrl) {
    form.destination.value = initial;
    watch(initial, "", "");
  }
})();
