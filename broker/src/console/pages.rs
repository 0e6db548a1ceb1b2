//! The console's HTML pages: an overview of the broker, a table per kind
//! of thing (queues, topics, durable subscribers, connections, bridges)
//! and a page per queue with its waiting messages and the forms an admin
//! uses (send, purge, delete, and "retry" in a dead-letter queue).
//!
//! Counters that only grow are labelled "since start": they begin at zero
//! when this node becomes active. A table with nothing in it says so.

use std::fmt::Write as _;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{durable_views, visible_queues};
use crate::network::BridgeInfo;
use crate::router::{Browsed, Message, Stats};
use crate::shared::{BrokerCore, Summary};

/// Characters of a queue name kept as they are in a URL path.
const PATH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_');

/// Bytes of a message body the queue page shows.
const PREVIEW: usize = 256;
/// Messages the queue page lists.
pub(super) const BROWSE: usize = 100;

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A queue's page, `/queues/NAME`.
pub(super) fn queue_path(name: &str) -> String {
    format!("/queues/{}", utf8_percent_encode(name, PATH))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#263238;color:#fff;padding:.8em 2em}header h1{margin:0;font-size:1.3em}\
header span{color:#b0bec5;font-size:.9em}nav{background:#eceff1;padding:.5em 2em}\
nav a{margin-right:1.5em;color:#263238;text-decoration:none}nav a.here{font-weight:bold}\
main{padding:1em 2em}table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #cfd8dc;padding:4px 10px;text-align:right;vertical-align:top}\
th{background:#f5f7f8;text-align:left}td:first-child,td.l{text-align:left}\
p.empty{color:#607d8b;font-style:italic}.bar{display:inline-block;width:12em;height:.8em;\
background:#eceff1;border:1px solid #cfd8dc;vertical-align:middle;margin-right:.5em}\
.bar i{display:block;height:100%;background:#43a047}form{display:inline-block;margin:0 1em 1em 0}\
fieldset{border:1px solid #cfd8dc;padding:.6em 1em}pre{margin:0;white-space:pre-wrap;\
overflow-wrap:anywhere;min-width:12em;max-width:40em;text-align:left;font-size:.85em}small{color:#607d8b}";

/// The page around `body`: header, navigation (`here` marked), and an
/// automatic refresh for pages without forms.
fn layout(broker: &str, title: &str, here: &str, refresh: bool, body: &str) -> String {
    let broker = escape(broker);
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\">{}\
         <title>{} — {broker} — portico-broker</title><style>{STYLE}</style></head><body>\
         <header><h1>{broker}</h1><span>portico-broker {}</span></header><nav>",
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"5\">"
        } else {
            ""
        },
        escape(title),
        env!("CARGO_PKG_VERSION"),
    );
    for (path, label) in [
        ("/", "Overview"),
        ("/queues", "Queues"),
        ("/topics", "Topics"),
        ("/durable", "Durable subscribers"),
        ("/connections", "Connections"),
        ("/network", "Network"),
        ("/live", "Live"),
    ] {
        let class = if path == here { " class=\"here\"" } else { "" };
        let _ = write!(html, "<a href=\"{path}\"{class}>{label}</a>");
    }
    let _ = write!(
        html,
        "</nav><main><h2>{}</h2>{body}</main></body></html>",
        escape(title)
    );
    html
}

/// A table with `head` columns and `rows`, or `empty` said in words.
fn table(head: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", escape(empty));
    }
    let mut html = String::from("<table><tr>");
    for h in head {
        let _ = write!(html, "<th>{h}</th>");
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str(row);
    }
    html.push_str("</table>");
    html
}

fn row(cells: &[String]) -> String {
    let mut html = String::from("<tr>");
    for c in cells {
        let _ = write!(html, "<td>{c}</td>");
    }
    html.push_str("</tr>");
    html
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn uptime(seconds: u64) -> String {
    let d = Duration::from_secs(seconds);
    let (days, hours, minutes) = (
        d.as_secs() / 86_400,
        d.as_secs() / 3600 % 24,
        d.as_secs() / 60 % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds} s"),
        (0, 0, m) => format!("{m} min {} s", seconds % 60),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `/`: the broker at a glance.
pub(super) fn overview(core: &BrokerCore, stats: &Stats, bridges: &[BridgeInfo]) -> String {
    let s: Summary = core.summary(stats.memory);
    let memory = stats.memory;
    let percent = if memory.limit == 0 {
        0.0
    } else {
        100.0 * memory.used as f64 / memory.limit as f64
    };
    let connected = bridges.iter().filter(|b| b.state == "connected").count();
    let mut body = String::new();
    let _ = write!(
        body,
        "<table>\
         <tr><th>Name</th><td class=\"l\">{}</td></tr>\
         <tr><th>Role</th><td class=\"l\">{} <small>(a standby serves no console)</small></td></tr>\
         <tr><th>Version</th><td class=\"l\">portico-broker {}</td></tr>\
         <tr><th>Active since</th><td class=\"l\">{} <small>(up {})</small></td></tr>\
         <tr><th>Memory</th><td class=\"l\"><span class=\"bar\"><i style=\"width:{:.1}%\"></i></span>\
         {} of {} ({percent:.1}%) <small>memory_limit</small></td></tr>\
         <tr><th>Journal</th><td class=\"l\">{} on disk <small>(live messages plus a segment or two; \
         no size limit)</small></td></tr>\
         <tr><th>Held-back senders</th><td class=\"l\">{}</td></tr>\
         <tr><th>Scheduled messages</th><td class=\"l\">{}</td></tr>\
         </table>",
        escape(&s.name),
        s.role,
        s.version,
        escape(&s.started_at),
        uptime(s.uptime_seconds),
        percent.min(100.0),
        bytes(memory.used as u64),
        bytes(memory.limit as u64),
        bytes(s.journal_bytes),
        memory.held_senders,
        stats.scheduled,
    );
    let queues = visible_queues(stats).count();
    let waiting: usize = visible_queues(stats).map(|q| q.pending).sum();
    let _ = write!(
        body,
        "<h3>Now</h3><table>\
         <tr><th>Queues</th><td>{queues}</td><td class=\"l\">{waiting} messages waiting or in flight</td></tr>\
         <tr><th>Topics</th><td>{}</td><td></td></tr>\
         <tr><th>Durable subscriptions</th><td>{}</td><td></td></tr>\
         <tr><th>Connections</th><td>{}</td><td></td></tr>\
         <tr><th>Network bridges</th><td>{}</td><td class=\"l\">{connected} connected</td></tr>\
         </table>\
         <h3>Since start</h3><table>\
         <tr><th>Connections accepted</th><td>{}</td></tr>\
         <tr><th>Logins refused</th><td>{}</td></tr>\
         <tr><th>Connections closed with an ERROR</th><td>{}</td></tr>\
         <tr><th>Connections refused at accept</th><td>{}</td></tr>\
         </table>",
        stats.topics.len(),
        core.durables.list().len(),
        stats.connections.len(),
        bridges.len(),
        s.connections_total,
        s.failed_logins,
        s.protocol_errors,
        s.refused_connections,
    );
    layout(&core.name, "Overview", "/", true, &body)
}

/// `/queues`.
pub(super) fn queues(core: &BrokerCore, stats: &Stats) -> String {
    let rows: Vec<String> = visible_queues(stats)
        .map(|q| {
            row(&[
                format!(
                    "<a href=\"{}\">{}</a>",
                    queue_path(&q.name),
                    escape(&q.name)
                ),
                q.pending.to_string(),
                q.consumers.to_string(),
                q.producers.to_string(),
                q.enqueued.to_string(),
                q.dequeued.to_string(),
                q.expired.to_string(),
                q.dead_lettered.to_string(),
            ])
        })
        .collect();
    let body = table(
        &[
            "Name",
            "Pending",
            "Consumers",
            "Producers",
            "Enqueued since start",
            "Dequeued since start",
            "Expired since start",
            "Dead-lettered since start",
        ],
        &rows,
        "No queues yet: a queue appears when a client sends to it or subscribes to it.",
    );
    layout(&core.name, "Queues", "/queues", true, &body)
}

/// What a queue's page shows besides its messages.
pub(super) struct QueuePage<'a> {
    pub(super) name: &'a str,
    pub(super) browsed: &'a Browsed,
    /// A notice at the top (what an action just did).
    pub(super) notice: Option<&'a str>,
}

/// `/queues/NAME`: figures, the first waiting messages, and the forms.
pub(super) fn queue(core: &BrokerCore, stats: &Stats, page: &QueuePage<'_>) -> String {
    let QueuePage {
        name,
        browsed,
        notice,
    } = page;
    let path = queue_path(name);
    let mut body = String::new();
    if let Some(notice) = notice {
        let _ = write!(body, "<p><b>{}</b></p>", escape(notice));
    }
    if let Some(q) = stats.queues.iter().find(|q| q.name == *name) {
        let _ = write!(
            body,
            "<table><tr><th>Pending</th><th>Consumers</th><th>Producers</th><th>Bytes held</th>\
             <th>Enqueued since start</th><th>Dequeued since start</th><th>Expired since start</th>\
             <th>Dead-lettered since start</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            q.pending,
            q.consumers,
            q.producers,
            bytes(q.bytes as u64),
            q.enqueued,
            q.dequeued,
            q.expired,
            q.dead_lettered
        );
    }
    let dead_letters = browsed
        .messages
        .iter()
        .any(|(m, _)| crate::intake::original_destination(m).is_some());
    let _ = write!(
        body,
        "<h3>Messages</h3><p><small>{} waiting{}; delivered and unacknowledged ones are with \
         their consumers.</small></p>",
        browsed.waiting,
        if browsed.waiting > browsed.messages.len() {
            format!(", the first {} shown", browsed.messages.len())
        } else {
            String::new()
        }
    );
    let rows: Vec<String> = browsed
        .messages
        .iter()
        .map(|(m, redelivered)| message_row(&path, m, *redelivered, dead_letters))
        .collect();
    let mut head = vec![
        "Message id",
        "Priority",
        "Persistent",
        "Redelivered",
        "Headers",
        "Body",
    ];
    if dead_letters {
        head.push("Retry");
    }
    body.push_str(&table(
        &head,
        &rows,
        "No messages are waiting in this queue.",
    ));
    let _ = write!(
        body,
        "<h3>Actions</h3><p><small>These need the login of a user with the admin right on \
         this queue; each is journaled.</small></p>\
         <form method=\"post\" action=\"{path}/send\"><fieldset><legend>Send a message</legend>\
         <textarea name=\"body\" rows=\"3\" cols=\"50\" placeholder=\"body\"></textarea><br>\
         <textarea name=\"headers\" rows=\"2\" cols=\"50\" placeholder=\"headers, one name:value a line\"></textarea><br>\
         <label><input type=\"checkbox\" name=\"persistent\" value=\"true\" checked> persistent</label> \
         <button type=\"submit\">Send</button></fieldset></form>\
         <form method=\"post\" action=\"{path}/purge\"><button type=\"submit\">Purge waiting messages</button></form>\
         <form method=\"post\" action=\"{path}/delete\"><button type=\"submit\">Delete queue</button></form>"
    );
    if dead_letters {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{path}/retry\"><button type=\"submit\">Retry all: \
             move every dead letter back to its original destination</button></form>"
        );
    }
    layout(
        &core.name,
        &format!("Queue {name}"),
        "/queues",
        false,
        &body,
    )
}

fn message_row(path: &str, m: &Message, redelivered: bool, dead_letters: bool) -> String {
    let headers: String = m
        .headers
        .iter()
        .filter(|(k, _)| k != crate::durable::TOPIC_HEADER)
        .map(|(k, v)| format!("{}: {}\n", escape(k), escape(v)))
        .collect();
    let shown = &m.body[..m.body.len().min(PREVIEW)];
    let preview = match std::str::from_utf8(shown) {
        Ok(text) => escape(text),
        Err(_) => format!("({} bytes, not text)", m.body.len()),
    };
    let more = if m.body.len() > PREVIEW {
        format!("<br><small>… {} bytes in all</small>", m.body.len())
    } else {
        String::new()
    };
    let mut cells = vec![
        escape(&m.message_id),
        m.priority.to_string(),
        if m.stored { "yes" } else { "no" }.to_owned(),
        if redelivered { "yes" } else { "no" }.to_owned(),
        format!("<pre>{headers}</pre>"),
        format!("<pre>{preview}</pre>{more}"),
    ];
    if dead_letters {
        cells.push(match crate::intake::original_destination(m) {
            Some(to) => format!(
                "<form method=\"post\" action=\"{path}/retry\"><input type=\"hidden\" name=\"id\" \
                 value=\"{}\"><button type=\"submit\">Retry to {}</button></form>",
                escape(&m.message_id),
                escape(&to.to_string())
            ),
            None => String::new(),
        });
    }
    row(&cells)
}

/// `/topics`.
pub(super) fn topics(core: &BrokerCore, stats: &Stats) -> String {
    let rows: Vec<String> = stats
        .topics
        .iter()
        .map(|t| {
            row(&[
                escape(&t.name),
                t.subscribers.to_string(),
                t.producers.to_string(),
                t.enqueued.to_string(),
                t.dequeued.to_string(),
                t.expired.to_string(),
            ])
        })
        .collect();
    let body = table(
        &[
            "Name",
            "Subscribers",
            "Producers",
            "Enqueued since start",
            "Dequeued since start",
            "Expired since start",
        ],
        &rows,
        "No topics yet: a topic appears when a client publishes to it or subscribes to it.",
    );
    layout(&core.name, "Topics", "/topics", true, &body)
}

/// `/durable`.
pub(super) fn durable(core: &BrokerCore, stats: &Stats) -> String {
    let rows: Vec<String> = durable_views(core, stats)
        .into_iter()
        .map(|d| {
            row(&[
                escape(&d.client_id),
                escape(&d.subscription),
                escape(&d.topic),
                escape(d.selector.as_deref().unwrap_or("")),
                if d.active { "active" } else { "offline" }.to_owned(),
                d.pending.to_string(),
                d.enqueued.to_string(),
                d.dequeued.to_string(),
            ])
        })
        .collect();
    let body = table(
        &[
            "Client id",
            "Subscription",
            "Topic",
            "Selector",
            "State",
            "Pending",
            "Enqueued since start",
            "Dequeued since start",
        ],
        &rows,
        "No durable subscriptions: a client makes one with a client-id on CONNECT and \
         activemq.subscriptionName on SUBSCRIBE.",
    );
    layout(
        &core.name,
        "Durable topic subscribers",
        "/durable",
        true,
        &body,
    )
}

/// `/connections`.
pub(super) fn connections(core: &BrokerCore, stats: &Stats) -> String {
    let rows: Vec<String> = stats
        .connections
        .iter()
        .map(|c| {
            row(&[
                escape(&c.remote),
                escape(&c.user),
                escape(&c.transport),
                escape(&c.version),
                format!("<pre>{}</pre>", escape(&c.destinations.join("\n"))),
                c.subscriptions.to_string(),
                c.messages_sent.to_string(),
                c.messages_delivered.to_string(),
                escape(&c.connected_at),
            ])
        })
        .collect();
    let body = table(
        &[
            "Client",
            "User",
            "Transport",
            "Version",
            "Destinations",
            "Subscriptions",
            "Sent since connected",
            "Delivered since connected",
            "Connected at",
        ],
        &rows,
        "No client is connected.",
    );
    layout(&core.name, "Connections", "/connections", true, &body)
}

/// `/network`.
pub(super) fn network(core: &BrokerCore, bridges: &[BridgeInfo]) -> String {
    let rows: Vec<String> = bridges
        .iter()
        .map(|b| {
            row(&[
                escape(&b.name),
                escape(&b.remote_broker),
                escape(&b.remote_address),
                format!("{}{}", b.direction, if b.duplex { " (duplex)" } else { "" }),
                b.state.to_owned(),
                b.messages_forwarded.to_string(),
                b.messages_received.to_string(),
            ])
        })
        .collect();
    let body = table(
        &[
            "Bridge",
            "Remote broker",
            "Remote address",
            "Direction",
            "State",
            "Forwarded since start",
            "Received since start",
        ],
        &rows,
        "No network bridges: this broker has no [[network_connector]] and no peer connected to it.",
    );
    layout(&core.name, "Network bridges", "/network", true, &body)
}

/// A page that says what went wrong with an action, and links back.
pub(super) fn failure(core: &BrokerCore, back: &str, message: &str) -> String {
    let body = format!(
        "<p>{}</p><p><a href=\"{}\">Back</a></p>",
        escape(message),
        escape(back)
    );
    layout(&core.name, "Not done", "", false, &body)
}

/// `/live`: watch a queue or topic as messages arrive, in the browser,
/// over the broker's STOMP-over-WebSocket transport (`ws_url`; `None`
/// when the broker has none).
pub(super) fn live(core: &BrokerCore, ws_url: Option<&str>) -> String {
    let body = match ws_url {
        None => "<p class=\"empty\">This broker has no <code>stomp+ws</code> or \
                 <code>stomp+wss</code> transport: add one to watch destinations here.</p>"
            .to_owned(),
        Some(url) => format!(
            "<div id=\"live\" data-ws=\"{url}\">\
             <form id=\"watch\" autocomplete=\"off\">\
             <label>Destination <input name=\"destination\" placeholder=\"/topic/prices or /queue/orders\" size=\"40\"></label> \
             <label>Login <input name=\"login\" size=\"12\"></label> \
             <label>Passcode <input name=\"passcode\" type=\"password\" size=\"12\"></label> \
             <button>Watch</button></form>\
             <p id=\"status\">Choose a destination to watch (over {url}).</p>\
             <table id=\"messages\"><thead><tr><th>Received</th><th>Destination</th>\
             <th>Message id</th><th>Body</th></tr></thead><tbody></tbody></table>\
             <p id=\"empty\" class=\"empty\">No messages yet: they appear here as they arrive, \
             newest first (a queue's are taken from it, as by any consumer).</p></div>\
             <script src=\"/static/stomp.umd.min.js\"></script><script src=\"/static/live.js\"></script>",
            url = escape(url)
        ),
    };
    layout(&core.name, "Live", "/live", false, &body)
}
