//! TLS and mutual TLS end to end: certificates made by rcgen at run time, the
//! real broker with `kind = "tls"` listeners, and real clients: rumqttc over
//! rustls, Mosquitto's command-line clients (OpenSSL), and a blocking rustls
//! client that shows the handshake and the certificate served.
//!
//! Each extra listener binds its own loopback address, so a test finds it in the
//! ready line by address whatever the order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;
mod sec_harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{TlsConfiguration, Transport};
use sec_harness::mqtt::{self, connect_ok, Client, Connect, ACCEPTED, NOT_AUTHORIZED, V3, V5};
use sec_harness::pki::{
    client_config, client_config_versions, email_san, mqtt_over_tls, served_certificate,
    tls_connect, Ca, Leaf,
};
use sec_harness::{
    assert_check_config_fails, assert_start_fails, password_file, replace_file, start, temp_dir,
    toml_path, tool, wait_output, write_file, Broker, Scheme, WAIT,
};

/// The CAs and certificates of one test, written to its directory.
struct Pki {
    dir: PathBuf,
    /// Signs the server certificate; clients trust it.
    ca: Ca,
    ca_file: PathBuf,
    /// Signs client certificates; the broker trusts it for them.
    client_ca: Ca,
    client_ca_file: PathBuf,
    /// Nobody trusts it.
    rogue_ca: Ca,
    rogue_ca_file: PathBuf,
    server: Leaf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = temp_dir(name);
        let ca = Ca::new("ringmq test CA");
        let client_ca = Ca::new("ringmq test client CA");
        let rogue_ca = Ca::new("someone else's CA");
        let server = ca.server("ringmq test server");
        let (server_cert, server_key) = server.write(&dir, "server");
        Pki {
            ca_file: ca.write(&dir, "ca.pem"),
            client_ca_file: client_ca.write(&dir, "client-ca.pem"),
            rogue_ca_file: rogue_ca.write(&dir, "rogue-ca.pem"),
            dir,
            ca,
            client_ca,
            rogue_ca,
            server,
            server_cert,
            server_key,
        }
    }

    /// A `[[listener]]` of kind tls on `ip`, with `extra` lines.
    fn listener(&self, ip: &str, extra: &str) -> String {
        format!(
            "[[listener]]\nkind = \"tls\"\nlisten = \"{ip}:0\"\ncert = {}\nkey = {}\n{extra}\n",
            toml_path(&self.server_cert),
            toml_path(&self.server_key)
        )
    }

    /// Lines that make a listener ask for client certificates.
    fn client_certs(&self, mode: &str) -> String {
        format!(
            "client_ca = {}\nclient_cert = \"{mode}\"\n",
            toml_path(&self.client_ca_file)
        )
    }
}

fn tls_of(broker: &Broker, ip: &str) -> std::net::SocketAddr {
    broker.on(Scheme::Tls, ip).addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_rustls_publishes_and_subscribes() {
    let pki = Pki::new("tls-rumqttc");
    let broker = start(&pki.dir, &pki.listener("127.0.0.2", ""), &[]);
    let addr = tls_of(&broker, "127.0.0.2");
    let trusted = TlsConfiguration::Rustls(client_config(&[&pki.ca], None));

    let mut o4 = rumqttc::MqttOptions::new("tls-v4", "127.0.0.2", addr.port());
    o4.set_transport(Transport::tls_with_config(trusted.clone()));
    let mut v4 = harness::V4::connect(o4).await;
    let mut o5 = rumqttc::v5::MqttOptions::new("tls-v5", "127.0.0.2", addr.port());
    o5.set_transport(Transport::tls_with_config(trusted));
    let mut v5 = harness::V5::connect(o5).await;
    v5.subscribe("tls/to5", harness::Qos::AtLeastOnce).await;
    v4.subscribe_ok("tls/to4", harness::Qos311::AtLeastOnce)
        .await;
    v4.publish("tls/to5", harness::Qos311::AtLeastOnce, false, "from v4")
        .await;
    v5.publish("tls/to4", harness::Qos::ExactlyOnce, false, "from v5")
        .await;
    assert_eq!(v5.recv().await.payload.as_ref(), b"from v4");
    assert_eq!(v4.recv().await.payload.as_ref(), b"from v5");

    // Across transports: a plain TCP subscriber gets what a TLS client sends.
    let mut plain = connect_ok(broker.tcp(), &Connect::new(V5, "plain"));
    plain.subscribe_ok("tls/to-plain", 1);
    v5.publish("tls/to-plain", harness::Qos::AtLeastOnce, false, "over tls")
        .await;
    tokio::task::block_in_place(|| plain.expect_message("tls/to-plain", "over tls"));
}

#[test]
fn tls_1_2_and_1_3_are_served_and_an_untrusted_server_is_refused() {
    let pki = Pki::new("tls-versions");
    let broker = start(&pki.dir, &pki.listener("127.0.0.2", ""), &[]);
    let addr = tls_of(&broker, "127.0.0.2");

    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = client_config_versions(&[&pki.ca], None, &[version]);
        let (stream, socket) = tls_connect(addr, config, "127.0.0.1")
            .unwrap_or_else(|e| panic!("{:?}: {e}", version.version));
        assert_eq!(stream.conn.protocol_version(), Some(version.version));
        assert_eq!(served_certificate(&stream), pki.server.der);
        let (code, mut client) = Client::handshake(
            Box::new(stream),
            socket,
            &Connect::new(V5, &format!("{:?}", version.version)),
        )
        .unwrap();
        assert_eq!(code, ACCEPTED);
        client.subscribe_ok("tls/version", 1);
        client.publish_ok("tls/version", b"v", 1, false);
        client.expect_message("tls/version", "v");
    }

    // A client that trusts another CA does not accept the server.
    let error = tls_connect(addr, client_config(&[&pki.rogue_ca], None), "127.0.0.1")
        .expect_err("the handshake must fail");
    assert!(
        error.contains("invalid peer certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    // MQTT in clear text on the TLS port gets no CONNACK.
    let stream = mqtt::tcp(addr);
    let socket = stream.try_clone().unwrap();
    match Client::handshake(Box::new(stream), socket, &Connect::new(V5, "cleartext")) {
        Ok((code, _)) => panic!("a clear-text CONNECT on the TLS port got CONNACK {code:#x}"),
        Err(mqtt::Ended::Closed(_)) => {}
        Err(mqtt::Ended::TimedOut) => panic!("the TLS port neither answered nor closed"),
    }
}

fn mosquitto(program: &str, pki_ca: &Path, port: u16, args: &[&str]) -> std::process::Output {
    let child = Command::new(tool(program, "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
        .arg(pki_ca)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a mosquitto client");
    wait_output(child, WAIT + Duration::from_secs(5))
}

#[test]
fn mosquitto_clients_connect_with_the_right_ca_and_are_refused_with_a_wrong_one() {
    let pki = Pki::new("tls-mosquitto");
    let broker = start(&pki.dir, &pki.listener("127.0.0.1", ""), &[]);
    let port = broker.first(Scheme::Tls).addr.port();

    // A retained message is there before mosquitto_sub subscribes: no race.
    let mut raw = connect_ok(broker.tcp(), &Connect::new(V5, "retainer"));
    raw.publish_ok("tls/retained", b"kept", 1, true);
    let wait_s = WAIT.as_secs().to_string();
    let out = mosquitto(
        "mosquitto_sub",
        &pki.ca_file,
        port,
        &[
            "-t",
            "tls/retained",
            "-C",
            "1",
            "-W",
            &wait_s,
            "-i",
            "mosq-sub",
        ],
    );
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kept");

    raw.subscribe_ok("tls/from-mosquitto", 1);
    let out = mosquitto(
        "mosquitto_pub",
        &pki.ca_file,
        port,
        &[
            "-t",
            "tls/from-mosquitto",
            "-m",
            "hello",
            "-q",
            "1",
            "-i",
            "mosq-pub",
        ],
    );
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    raw.expect_message("tls/from-mosquitto", "hello");

    // Trusting the wrong CA: the TLS handshake fails, nothing is received.
    let out = mosquitto(
        "mosquitto_sub",
        &pki.rogue_ca_file,
        port,
        &[
            "-t",
            "tls/retained",
            "-C",
            "1",
            "-W",
            &wait_s,
            "-i",
            "mosq-rogue",
        ],
    );
    assert!(
        !out.status.success(),
        "mosquitto_sub with a wrong CA succeeded"
    );
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS") || stderr.contains("certificate"),
        "{stderr}"
    );
}

#[test]
fn mutual_tls_required_and_optional() {
    let pki = Pki::new("tls-mutual");
    let config = format!(
        "{}{}",
        pki.listener("127.0.0.2", &pki.client_certs("required")),
        pki.listener("127.0.0.3", &pki.client_certs("optional"))
    );
    let broker = start(&pki.dir, &config, &[]);
    let required = tls_of(&broker, "127.0.0.2");
    let optional = tls_of(&broker, "127.0.0.3");
    let device = pki.client_ca.client("device-1", vec![]);
    let rogue = pki.rogue_ca.client("device-1", vec![]);
    let with_cert = || client_config(&[&pki.ca], Some(&device));
    let without_cert = || client_config(&[&pki.ca], None);
    let with_rogue_cert = || client_config(&[&pki.ca], Some(&rogue));

    // Required: no certificate, or one from another CA, fails; a good one works.
    for (what, config) in [
        ("no certificate", without_cert()),
        ("a rogue certificate", with_rogue_cert()),
    ] {
        if let Ok((code, _)) = mqtt_over_tls(required, config, &Connect::new(V5, "no-cert")) {
            panic!("required mTLS with {what} got CONNACK {code:#x}");
        }
    }
    let (code, mut client) =
        mqtt_over_tls(required, with_cert(), &Connect::new(V5, "with-cert")).unwrap();
    assert_eq!(code, ACCEPTED);
    client.subscribe_ok("mtls/echo", 1);
    client.publish_ok("mtls/echo", b"mutual", 1, false);
    client.expect_message("mtls/echo", "mutual");

    // Optional: both with and without; a certificate that does not verify is
    // still refused.
    for (id, config) in [("opt-with", with_cert()), ("opt-without", without_cert())] {
        let (code, _client) = mqtt_over_tls(optional, config, &Connect::new(V3, id))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(code, ACCEPTED, "{id}");
    }
    assert!(
        mqtt_over_tls(optional, with_rogue_cert(), &Connect::new(V3, "opt-rogue")).is_err(),
        "optional mTLS accepted a certificate from an unknown CA"
    );

    // rumqttc with a client certificate on the required listener.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut o = rumqttc::v5::MqttOptions::new("rumqttc-mtls", "127.0.0.2", required.port());
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            client_config(&[&pki.ca], Some(&device)),
        )));
        let mut c = harness::V5::connect(o).await;
        c.subscribe("mtls/rumqttc", harness::Qos::AtLeastOnce).await;
        c.publish("mtls/rumqttc", harness::Qos::AtLeastOnce, false, "ok")
            .await;
        assert_eq!(c.recv().await.payload.as_ref(), b"ok");
    });
}

#[test]
fn the_user_name_from_a_client_certificate_is_what_the_acl_sees() {
    let pki = Pki::new("tls-identity");
    let acl = write_file(
        &pki.dir,
        "acl.toml",
        "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"devices/%u/#\", \"inbox/%u\"]\n",
    );
    // A password file without these users, and no anonymous clients: the
    // certificate alone is the credential.
    let passwords = password_file(&pki.dir, "passwords", &[("someone", "else")]);
    let required = pki.client_certs("required");
    let config = format!(
        "[auth]\npassword_file = {}\nacl_file = {}\nallow_anonymous = false\n\n{}{}",
        toml_path(&passwords),
        toml_path(&acl),
        pki.listener("127.0.0.2", &format!("{required}username_from = \"cn\"\n")),
        pki.listener("127.0.0.3", &format!("{required}username_from = \"san\"\n")),
    );
    let broker = start(&pki.dir, &config, &[]);
    let by_cn = tls_of(&broker, "127.0.0.2");
    let by_san = tls_of(&broker, "127.0.0.3");
    let alice = pki
        .client_ca
        .client("alice", vec![email_san("alice@devices.example")]);
    let as_alice = || client_config(&[&pki.ca], Some(&alice));

    let (code, mut client) =
        mqtt_over_tls(by_cn, as_alice(), &Connect::new(V5, "alice-cn")).unwrap();
    assert_eq!(code, ACCEPTED, "a verified certificate needs no password");
    assert_eq!(
        client.subscribe(&[
            ("devices/alice/#", 1),
            ("devices/bob/#", 1),
            ("devices/alice@devices.example/#", 1),
        ]),
        vec![1, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    client.publish_ok("devices/alice/t", b"cn", 1, false);
    client.expect_message("devices/alice/t", "cn");
    assert_eq!(
        client.publish("devices/bob/t", b"", 1, false),
        NOT_AUTHORIZED
    );

    let (code, mut client) =
        mqtt_over_tls(by_san, as_alice(), &Connect::new(V3, "alice-san")).unwrap();
    assert_eq!(code, ACCEPTED);
    assert_eq!(
        client.subscribe(&[
            ("devices/alice@devices.example/#", 1),
            ("devices/alice/#", 1)
        ]),
        vec![1, mqtt::V3_SUBACK_FAILURE]
    );

    // Certificates whose CN would widen a `%u` rule.
    for cn in ["#", "+", "a/b"] {
        let cert = pki.client_ca.client(cn, vec![]);
        let (code, mut client) = mqtt_over_tls(
            by_cn,
            client_config(&[&pki.ca], Some(&cert)),
            &Connect::new(V5, &format!("cn-{}", cn.len())),
        )
        .unwrap();
        assert_eq!(code, ACCEPTED, "CN {cn:?}");
        assert_eq!(
            client.subscribe(&[
                ("inbox/#", 1),
                ("inbox/+", 1),
                ("devices/+/#", 1),
                ("devices/a/b/#", 1)
            ]),
            vec![NOT_AUTHORIZED; 4],
            "CN {cn:?}"
        );
        assert_eq!(
            client.publish("devices/alice/t", b"", 1, false),
            NOT_AUTHORIZED,
            "CN {cn:?}"
        );
    }
}

#[test]
fn sighup_serves_a_new_certificate_to_the_next_connection() {
    let pki = Pki::new("tls-reload");
    let broker = start(&pki.dir, &pki.listener("127.0.0.2", ""), &[]);
    let addr = tls_of(&broker, "127.0.0.2");
    let (code, mut held) = mqtt_over_tls(
        addr,
        client_config(&[&pki.ca], None),
        &Connect::new(V5, "held"),
    )
    .unwrap();
    assert_eq!(code, ACCEPTED);

    // A new certificate from another CA replaces the files.
    let next_ca = Ca::new("next CA");
    let next = next_ca.server("next server");
    replace_file(&pki.server_key, &next.key_pem);
    replace_file(&pki.server_cert, &next.cert_pem);
    broker.reload_applied();
    let trusting_next = || client_config(&[&next_ca], None);
    let (stream, _) = tls_connect(addr, trusting_next(), "127.0.0.1").unwrap();
    assert_eq!(served_certificate(&stream), next.der);
    let (code, _client) =
        mqtt_over_tls(addr, trusting_next(), &Connect::new(V5, "after-reload")).unwrap();
    assert_eq!(code, ACCEPTED);
    assert!(
        tls_connect(addr, client_config(&[&pki.ca], None), "127.0.0.1").is_err(),
        "the old certificate is still served"
    );
    // The session made before the reload goes on.
    held.subscribe_ok("reload/held", 1);
    held.publish_ok("reload/held", b"still", 1, false);
    held.expect_message("reload/held", "still");

    // A bad certificate file at a reload: the one in force stays.
    let shown = pki.server_cert.display().to_string();
    replace_file(&pki.server_cert, "not a certificate\n");
    let warning = broker.reload_refused(&[&shown]);
    assert!(warning.contains("WARN"), "{warning}");
    let (stream, _) = tls_connect(addr, trusting_next(), "127.0.0.1").unwrap();
    assert_eq!(served_certificate(&stream), next.der);
}

#[test]
fn a_bad_certificate_or_key_stops_the_start_and_check_config() {
    let pki = Pki::new("tls-bad-start");
    let garbage = write_file(&pki.dir, "garbage.pem", "not a certificate\n");
    let missing = pki.dir.join("missing.key");
    let other = pki.ca.server("another server");
    let (_, other_key) = other.write(&pki.dir, "other");
    let listener = |cert: &Path, key: &Path| {
        format!(
            "[[listener]]\nkind = \"tls\"\nlisten = \"127.0.0.2:0\"\ncert = {}\nkey = {}\n",
            toml_path(cert),
            toml_path(key)
        )
    };
    let cert = pki.server_cert.display().to_string();
    let garbage_shown = garbage.display().to_string();
    let missing_shown = missing.display().to_string();
    let other_key_shown = other_key.display().to_string();
    // Each case and the files its error may name (a key that does not match its
    // certificate is a fault of the pair).
    let cases = [
        (
            "garbage certificate",
            listener(&garbage, &pki.server_key),
            vec![garbage_shown.clone()],
        ),
        (
            "missing key",
            listener(&pki.server_cert, &missing),
            vec![missing_shown],
        ),
        (
            "garbage key",
            listener(&pki.server_cert, &garbage),
            vec![garbage_shown],
        ),
        (
            "key of another certificate",
            listener(&pki.server_cert, &other_key),
            vec![cert, other_key_shown],
        ),
    ];
    for (what, config, names) in cases {
        let stderr = assert_start_fails(&pki.dir, &config, &[]);
        assert!(
            names.iter().any(|name| stderr.contains(name.as_str())),
            "{what}: stderr names none of {names:?}:\n{stderr}"
        );
        assert_check_config_fails(&pki.dir, &config, &[]);
    }
}
