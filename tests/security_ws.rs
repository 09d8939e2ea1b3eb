//! MQTT over WebSocket end to end: the real broker with `ws` and `wss`
//! listeners, the Python paho-mqtt client (its `websockets` transport, as a
//! browser-like client would speak) as a child process, and raw HTTP for what
//! a client library hides (the status of a wrong path, the subprotocol answer).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod sec_harness;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use sec_harness::mqtt::{connect_ok, Client, Connect, Stream, V5};
use sec_harness::paho::Paho;
use sec_harness::pki::{client_config, tls_connect, Ca};
use sec_harness::{
    password_file, start, temp_dir, toml_path, write_file, Broker, Listener, Scheme, WAIT,
};

struct WsBroker {
    broker: Broker,
    ca_file: PathBuf,
    ca: Ca,
}

/// A broker with a `ws` listener on 127.0.0.2 and a `wss` one on 127.0.0.3,
/// `auth` as its `[auth]` table, and a plain listener on 127.0.0.4 that takes
/// anonymous clients and is exempt from the ACL (the observer's).
fn ws_broker(name: &str, auth: &str) -> WsBroker {
    let dir = temp_dir(name);
    let ca = Ca::new("ringmq ws test CA");
    let (cert, key) = ca.server("ringmq ws server").write(&dir, "server");
    let config = format!(
        "{auth}\n\
         [[listener]]\nkind = \"ws\"\nlisten = \"127.0.0.2:0\"\npath = \"/mqtt\"\n\n\
         [[listener]]\nkind = \"wss\"\nlisten = \"127.0.0.3:0\"\npath = \"/mqtt\"\n\
         cert = {}\nkey = {}\n\n\
         [[listener]]\nkind = \"tcp\"\nlisten = \"127.0.0.4:0\"\nacl = false\nallow_anonymous = true\n",
        toml_path(&cert),
        toml_path(&key)
    );
    let broker = start(&dir, &config, &[]);
    WsBroker {
        ca_file: ca.write(&dir, "ca.pem"),
        ca,
        broker,
    }
}

impl WsBroker {
    fn ws(&self) -> &Listener {
        let ws = self.broker.on(Scheme::Ws, "127.0.0.2");
        assert_eq!(ws.path, "/mqtt", "the ready line shows the path");
        ws
    }

    fn wss(&self) -> &Listener {
        let wss = self.broker.on(Scheme::Wss, "127.0.0.3");
        assert_eq!(wss.path, "/mqtt", "the ready line shows the path");
        wss
    }

    /// paho arguments that reach `listener` (with the CA for wss).
    fn paho_args(&self, listener: &Listener, version: u8, client_id: &str) -> Vec<String> {
        let mut args = vec![
            "--host".to_owned(),
            listener.addr.ip().to_string(),
            "--port".to_owned(),
            listener.addr.port().to_string(),
            "--path".to_owned(),
            listener.path.clone(),
            "--version".to_owned(),
            version.to_string(),
            "--client-id".to_owned(),
            client_id.to_owned(),
        ];
        if listener.scheme == Scheme::Wss {
            args.push("--ca".to_owned());
            args.push(self.ca_file.display().to_string());
        }
        args
    }

    /// A plain MQTT 5 client on the ACL-exempt listener.
    fn observer(&self, client_id: &str) -> Client {
        connect_ok(
            self.broker.on(Scheme::Tcp, "127.0.0.4").addr,
            &Connect::new(V5, client_id),
        )
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn paho_publishes_and_subscribes_over_ws_and_wss() {
    let b = ws_broker("ws-paho", "");
    for (listener, version) in [(b.ws(), 4), (b.wss(), 5), (b.ws(), 5), (b.wss(), 4)] {
        let tag = format!("{:?}-{version}", listener.scheme).to_lowercase();
        let down = format!("ws/{tag}/down");
        let up = format!("ws/{tag}/up");
        let mut rust_side = b.observer(&format!("rust-{tag}"));
        rust_side.subscribe_ok(&up, 1);

        let mut args = b.paho_args(listener, version, &format!("paho-{tag}"));
        args.extend(strings(&[
            "--sub",
            &format!("{down}@1"),
            "--wait-stdin",
            "--pub",
            &format!("{up}@1@from paho"),
            "--expect",
            "1",
        ]));
        let mut paho = Paho::spawn(&args);
        assert_eq!(paho.event("connack")["rc"], 0, "{tag}");
        assert_eq!(
            paho.event("suback")["codes"],
            serde_json::json!([1]),
            "{tag}"
        );
        // paho has subscribed: what the Rust side publishes reaches it...
        rust_side.publish_ok(&down, b"to paho", 1, false);
        paho.go();
        // ...and what it publishes reaches the Rust side.
        rust_side.expect_message(&up, "from paho");
        let message = paho.event("message");
        assert_eq!(message["topic"], down.as_str(), "{tag}");
        assert_eq!(message["payload"], "to paho", "{tag}");
        paho.finish();
    }
}

/// Sends an HTTP/1.1 upgrade request for `path` and returns the response head
/// (status line and headers), read within [`WAIT`].
fn upgrade_request(
    stream: &mut dyn Stream,
    socket: &std::net::TcpStream,
    host: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(protocol) = protocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.flush().unwrap();
    let deadline = Instant::now() + WAIT;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no complete response head: {head:?}"));
        socket.set_read_timeout(Some(left)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => panic!("closed before the response head ended: {head:?}"),
            Ok(_) => head.push(byte[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    String::from_utf8(head).unwrap()
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

#[test]
fn other_paths_get_404_and_the_upgrade_answers_with_the_mqtt_subprotocol() {
    let b = ws_broker("ws-http", "");

    let ws = b.ws().addr;
    for path in ["/", "/other", "/mqtt/extra", "/MQTT"] {
        let mut stream = sec_harness::mqtt::tcp(ws);
        let socket = stream.try_clone().unwrap();
        let head = upgrade_request(&mut stream, &socket, ws, path, Some("mqtt"));
        assert_eq!(status_of(&head), 404, "ws {path}: {head}");
    }
    let mut stream = sec_harness::mqtt::tcp(ws);
    let socket = stream.try_clone().unwrap();
    let head = upgrade_request(&mut stream, &socket, ws, "/mqtt", Some("mqtt"));
    assert_eq!(status_of(&head), 101, "{head}");
    assert_eq!(
        header(&head, "sec-websocket-protocol"),
        Some("mqtt"),
        "{head}"
    );
    // RFC 6455: the accept key of the sample nonce.
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );

    // The same over TLS.
    let wss = b.wss().addr;
    let config = || client_config(&[&b.ca], None);
    let (mut stream, socket) = tls_connect(wss, config(), "127.0.0.1").unwrap();
    let head = upgrade_request(&mut stream, &socket, wss, "/elsewhere", Some("mqtt"));
    assert_eq!(status_of(&head), 404, "wss: {head}");
    let (mut stream, socket) = tls_connect(wss, config(), "127.0.0.1").unwrap();
    let head = upgrade_request(&mut stream, &socket, wss, "/mqtt", Some("mqtt"));
    assert_eq!(status_of(&head), 101, "wss: {head}");
    assert_eq!(
        header(&head, "sec-websocket-protocol"),
        Some("mqtt"),
        "{head}"
    );
}

#[test]
fn websocket_clients_meet_the_same_auth_and_acl() {
    let dir = temp_dir("ws-auth-files");
    let passwords = password_file(&dir, "passwords", &[("alice", "alice-pw")]);
    let acl = write_file(
        &dir,
        "acl.toml",
        "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"users/%u/#\"]\n",
    );
    let b = ws_broker(
        "ws-auth",
        &format!(
            "[auth]\npassword_file = {}\nacl_file = {}\nfailed_login_max = 0\n",
            toml_path(&passwords),
            toml_path(&acl)
        ),
    );
    let mut observer = b.observer("observer");
    observer.subscribe_ok("users/#", 1);

    // Refusals: a wrong password (MQTT 5: 0x86), no credentials (3.1.1: 5).
    let mut args = b.paho_args(b.ws(), 5, "wrong");
    args.extend(strings(&["--user", "alice", "--password", "nope"]));
    let mut paho = Paho::spawn(&args);
    assert_eq!(paho.event("connack")["rc"], 0x86);
    assert!(!paho.wait().success());
    let mut paho = Paho::spawn(&b.paho_args(b.wss(), 4, "anonymous"));
    assert_eq!(paho.event("connack")["rc"], 5);
    assert!(!paho.wait().success());

    // alice: her own space only; her refused publish goes nowhere.
    for (listener, version) in [(b.ws(), 5), (b.wss(), 4)] {
        let tag = format!("{:?}-{version}", listener.scheme).to_lowercase();
        let mut args = b.paho_args(listener, version, &format!("alice-{tag}"));
        let mine = format!("users/alice/{tag}");
        args.extend(strings(&[
            "--user",
            "alice",
            "--password",
            "alice-pw",
            "--sub",
            "users/alice/#@1",
            "--sub",
            "users/bob/#@1",
            "--pub",
            &format!("users/bob/{tag}@1@not hers"),
            "--pub",
            &format!("{mine}@1@hers"),
            "--expect",
            "1",
        ]));
        let mut paho = Paho::spawn(&args);
        assert_eq!(paho.event("connack")["rc"], 0, "{tag}");
        let refused = if version == 5 { 0x87 } else { 0x80 };
        assert_eq!(
            paho.event("suback")["codes"],
            serde_json::json!([1, refused]),
            "{tag}"
        );
        let message = paho.event("message");
        assert_eq!(message["topic"], mine.as_str(), "{tag}");
        paho.finish();
        // One publisher, in order: the refused message would have come first.
        observer.expect_message(&mine, "hers");
    }
    observer.expect_no_message();
}
