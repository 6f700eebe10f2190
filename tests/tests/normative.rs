//! Normative statements of MQTT 5.0 / 3.1.1 and AMQP 1.0 that third-party clients, conformance
//! suites and hostile probes found Wharf breaking (issue #12), each proven against the real
//! binary with a third-party client (Paho, mosquitto clients, Qpid Proton) or with raw bytes
//! written here — not with Wharf's own codec. `adapters/README.md` lists which test covers
//! which statement.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use wharf_tests::{
    KillOnDrop, free_port, have, json_lines, mosquitto, python, python_script, start_adapter,
    start_adapter_with_config, start_amqp_adapter, stores, wharf,
};

// ---- raw MQTT bytes ------------------------------------------------------------------------

/// A packet: the first byte, the remaining length (variable byte integer), the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(s: &[u8]) -> Vec<u8> {
    [&(s.len() as u16).to_be_bytes()[..], s].concat()
}

/// An MQTT 5 CONNECT of client `id` with connect `flags` (clean start: 0x02) and `props`.
fn connect5(id: &str, flags: u8, props: &[u8]) -> Vec<u8> {
    let mut body = [&string(b"MQTT")[..], &[5, flags, 0, 60]].concat();
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend_from_slice(&string(id.as_bytes()));
    packet(0x10, &body)
}

/// An MQTT 3.1.1 CONNECT of client `id` with connect `flags`.
fn connect311(id: &str, flags: u8) -> Vec<u8> {
    let body = [
        &string(b"MQTT")[..],
        &[4, flags, 0, 60],
        &string(id.as_bytes()),
    ]
    .concat();
    packet(0x10, &body)
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
enum End {
    /// An orderly close (FIN): everything it sent was read.
    Closed,
    /// A reset: what it sent last may be lost.
    Reset,
    /// Still open when the test stopped waiting.
    Open,
}

/// Write `bytes` (ignoring a server that stops reading) and read until the server closes or
/// `wait` passes; returns what it sent and how it ended.
fn exchange(port: u16, bytes: &[u8], wait: Duration) -> (Vec<u8>, End) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = s.write_all(bytes);
    read_until_end(&mut s, wait)
}

fn read_until_end(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, End::Open);
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (got, End::Closed),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, End::Open);
            }
            Err(_) => return (got, End::Reset),
        }
    }
}

/// Split a byte stream into MQTT packets: (first byte, body).
fn packets(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let (mut len, mut shift, mut i) = (0usize, 0, 1);
        loop {
            let byte = b[i];
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let Some(body) = b.get(i..i + len) else { break };
        out.push((b[0], body.to_vec()));
        b = &b[i + len..];
    }
    out
}

/// Whether an MQTT 5 property list (length first) holds property `id`.
fn has_property(props: &[u8], id: u8) -> bool {
    // Reason String and User Property, the only ones looked for, are strings: walk the list
    // by the encodings of the properties a server sends in CONNACK, acks and DISCONNECT.
    let (mut i, end) = (1usize, 1 + usize::from(props.first().copied().unwrap_or(0)));
    while i < end.min(props.len()) {
        let p = props[i];
        if p == id {
            return true;
        }
        i += 1;
        let str_at = |i: usize| 2 + usize::from(u16::from_be_bytes([props[i], props[i + 1]]));
        i += match p {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x26 => {
                let k = str_at(i);
                k + str_at(i + k)
            }
            _ => str_at(i), // strings and binary data
        };
    }
    false
}

/// `n` connections to `port` that send nothing, opened in order (50 ms apart).
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            std::thread::sleep(Duration::from_millis(50));
            s
        })
        .collect()
}

/// The oldest of `idle` was closed to make room for newer connections; the newest still
/// waits.
fn oldest_evicted(mut idle: Vec<TcpStream>) {
    let (_, first) = read_until_end(&mut idle[0], Duration::from_secs(5));
    assert_eq!(first, End::Closed, "the oldest idle connection was closed");
    let last = idle.len() - 1;
    let (_, newest) = read_until_end(&mut idle[last], Duration::from_millis(300));
    assert_eq!(newest, End::Open, "the newest idle connection still waits");
}

/// A `wharf adapter` with MQTT only, on a fresh local store, with `config` settings.
fn mqtt_adapter(config: &str) -> (KillOnDrop, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("store").display());
    let port = free_port();
    let adapter = if config.is_empty() {
        start_adapter(&url, port)
    } else {
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(&cfg, config).expect("config");
        start_adapter_with_config(&url, port, &cfg)
    };
    (adapter, port, dir)
}

const CONNACK_OK_311: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// Malformed packets close the connection: MQTT 5 after DISCONNECT with the reason code (a
/// CONNACK with it if the CONNECT is at fault), 3.1.1 without a word [MQTT-4.13.1-1,
/// 4.8.0-1]. `mqttbytes` accepts every one of these.
#[test]
fn mqtt_malformed_packets_close_the_connection() {
    let (_adapter, port, _dir) = mqtt_adapter("");
    let sub5 = |options: u8, filter: &[u8]| {
        packet(
            0x82,
            &[&[0, 1, 0][..], &string(filter), &[options]].concat(),
        )
    };
    // After a good CONNECT: (what, version 5?, packet, reason code expected).
    let cases: Vec<(&str, bool, Vec<u8>, u8)> = vec![
        (
            "MQTT-3.6.1-1 PUBREL flags 0000",
            true,
            packet(0x60, &[0, 1]),
            0x81,
        ),
        (
            "MQTT-3.6.1-1 PUBREL flags 0000",
            false,
            packet(0x60, &[0, 1]),
            0,
        ),
        (
            "MQTT-3.8.1-1 SUBSCRIBE flags 0000",
            true,
            packet(0x80, &[&[0, 1, 0][..], &string(b"a"), &[1]].concat()),
            0x81,
        ),
        (
            "MQTT-3.8.1-1 SUBSCRIBE flags 0000",
            false,
            packet(0x80, &[&[0, 1][..], &string(b"a"), &[1]].concat()),
            0,
        ),
        (
            "MQTT-3.10.1-1 UNSUBSCRIBE flags 0000",
            true,
            packet(0xa0, &[&[0, 1, 0][..], &string(b"a")].concat()),
            0x81,
        ),
        (
            "MQTT-3.10.1-1 UNSUBSCRIBE flags 0000",
            false,
            packet(0xa0, &[&[0, 1][..], &string(b"a")].concat()),
            0,
        ),
        (
            "MQTT-3.3.1-2 PUBLISH QoS 0 DUP 1",
            true,
            packet(0x38, &[&string(b"t")[..], &[0], b"hi"].concat()),
            0x81,
        ),
        (
            "MQTT-3.3.1-2 PUBLISH QoS 0 DUP 1",
            false,
            packet(0x38, &[&string(b"t")[..], b"hi"].concat()),
            0,
        ),
        (
            "MQTT-3.8.3-5 SUBSCRIBE reserved option bits",
            true,
            sub5(0xc1, b"a"),
            0x81,
        ),
        (
            "MQTT-3.8.3-5 SUBSCRIBE reserved option bits",
            false,
            packet(0x82, &[&[0, 1][..], &string(b"a"), &[0x05]].concat()),
            0,
        ),
        (
            "MQTT-3.8.3-4 No Local on a shared subscription",
            true,
            sub5(0x05, b"$share/g/a"),
            0x82,
        ),
        (
            "2.2.2.2 PUBLISH with Content Type twice",
            true,
            packet(
                0x30,
                &[
                    &string(b"t")[..],
                    &[8, 0x03, 0, 1, b'a', 0x03, 0, 1, b'b'],
                    b"hi",
                ]
                .concat(),
            ),
            0x82,
        ),
    ];
    for (what, v5, bad, code) in cases {
        let connect = if v5 {
            connect5("m", 0x02, &[])
        } else {
            connect311("m", 0x02)
        };
        let (got, end) = exchange(port, &[connect, bad].concat(), Duration::from_secs(10));
        assert_eq!(end, End::Closed, "{what} (v5 {v5}): closed, got {got:?}");
        let got = packets(&got);
        assert_eq!(
            got.first().map(|p| (p.0, p.1[1])),
            Some((0x20, 0)),
            "{what}: CONNACK first: {got:?}"
        );
        if v5 {
            assert_eq!(
                got.get(1).map(|p| (p.0, p.1[0])),
                Some((0xe0, code)),
                "{what}: DISCONNECT {code:#x}, got {got:?}"
            );
            assert_eq!(got.len(), 2, "{what}: nothing after DISCONNECT: {got:?}");
        } else {
            assert_eq!(
                got.len(),
                1,
                "{what} (3.1.1): closed without a reply: {got:?}"
            );
        }
    }
    // Faults in CONNECT itself: MQTT 5 gets CONNACK with the reason code, 3.1.1 a close.
    let twice = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
    for (what, bytes, code) in [
        (
            "MQTT-3.1.2-3 CONNECT reserved flag",
            connect5("m", 0x03, &[]),
            Some(0x81),
        ),
        (
            "MQTT-3.1.2-3 CONNECT reserved flag",
            connect311("m", 0x03),
            None,
        ),
        (
            "MQTT-3.1.4-2 Session Expiry Interval twice",
            connect5("m", 0x02, &twice),
            Some(0x82),
        ),
    ] {
        let (got, end) = exchange(port, &bytes, Duration::from_secs(10));
        assert_eq!(end, End::Closed, "{what}: closed");
        let got = packets(&got);
        match code {
            Some(code) => assert_eq!(
                got.iter().map(|p| (p.0, p.1[1])).collect::<Vec<_>>(),
                vec![(0x20, code)],
                "{what}: CONNACK {code:#x}"
            ),
            None => assert!(got.is_empty(), "{what} (3.1.1): no reply: {got:?}"),
        }
    }
    // The adapter lives on.
    let (got, _) = exchange(
        port,
        &[connect311("ok", 2), vec![0xe0, 0]].concat(),
        Duration::from_secs(5),
    );
    assert_eq!(got, CONNACK_OK_311);
}

/// What the client said about sizes holds for every packet: Reason Strings (and User
/// Properties) are left out rather than exceed its Maximum Packet Size, and the packet is
/// still sent [MQTT-3.1.2-24, 3.1.2-25, 3.2.2-19].
#[test]
fn mqtt_the_clients_maximum_packet_size_holds_for_every_packet() {
    let (_adapter, port, _dir) = mqtt_adapter("");
    let max = |n: u32| [&[0x27][..], &n.to_be_bytes()].concat();
    // Enhanced authentication, which Wharf refuses (0x8C), asked with room for 30 bytes.
    let auth = [&max(30)[..], &[0x15], &string(b"SCRAM-SHA-1")].concat();
    let (got, end) = exchange(port, &connect5("a", 0x02, &auth), Duration::from_secs(10));
    assert_eq!(end, End::Closed);
    assert!(
        got.len() <= 30,
        "CONNACK of {} bytes to a client allowing 30: {got:?}",
        got.len()
    );
    let p = packets(&got);
    assert_eq!(p.len(), 1, "{got:?}");
    assert_eq!((p[0].0, p[0].1[1]), (0x20, 0x8c), "CONNACK 0x8C: {got:?}");
    assert!(
        !has_property(&p[0].1[2..], 0x1f),
        "no reason string: {got:?}"
    );
    // A malformed CONNECT stating 30 bytes: its refusal fits too.
    let twice = [&max(30)[..], &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]].concat();
    let (got, _) = exchange(port, &connect5("a", 0x02, &twice), Duration::from_secs(10));
    assert!(
        got.len() <= 30 && packets(&got)[0].1[1] == 0x82,
        "CONNACK 0x82 within 30 bytes: {got:?}"
    );
    // Connected with room for 20 bytes: a PUBACK refusing a payload that is not UTF-8 (0x99),
    // then a DISCONNECT for a malformed packet, both without their reason strings.
    let bad_utf8 = packet(
        0x32,
        &[&string(b"t")[..], &[0, 7, 2, 0x01, 1], &[0xff, 0xfe]].concat(),
    );
    let malformed = packet(0x60, &[0, 1]);
    let bytes = [connect5("b", 0x02, &max(20)), bad_utf8, malformed].concat();
    let (got, end) = exchange(port, &bytes, Duration::from_secs(10));
    assert_eq!(end, End::Closed);
    let p = packets(&got);
    assert_eq!(
        p.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![0x20, 0x40, 0xe0],
        "{got:?}"
    );
    assert_eq!(p[1].1.get(2), Some(&0x99), "PUBACK 0x99: {:?}", p[1]);
    assert_eq!(p[2].1.first(), Some(&0x81), "DISCONNECT 0x81: {:?}", p[2]);
    for (kind, body) in &p {
        assert!(
            body.len() + 2 <= 20,
            "packet {kind:#x} of {} bytes: {body:?}",
            body.len() + 2
        );
    }
    assert!(
        !has_property(&p[2].1[1..], 0x1f),
        "DISCONNECT without reason string"
    );
}

/// A protocol level Wharf does not speak: MQTT 5's CONNACK 0x84 Unsupported Protocol Version
/// for a newer one, 3.1.1's 0x01 for MQTT 3.1 (level 3); then the connection closes
/// [MQTT-3.1.2-2].
#[test]
fn mqtt_unknown_protocol_level_gets_0x84() {
    let (_adapter, port, _dir) = mqtt_adapter("");
    let level = |n: u8| {
        packet(
            0x10,
            &[&string(b"MQTT")[..], &[n, 2, 0, 60], &string(b"x")].concat(),
        )
    };
    assert_eq!(
        exchange(port, &level(99), Duration::from_secs(10)),
        (vec![0x20, 0x03, 0x00, 0x84, 0x00], End::Closed)
    );
    assert_eq!(
        exchange(port, &level(6), Duration::from_secs(10)),
        (vec![0x20, 0x03, 0x00, 0x84, 0x00], End::Closed)
    );
    let mqtt31 = packet(
        0x10,
        &[&string(b"MQIsdp")[..], &[3, 2, 0, 60], &string(b"x")].concat(),
    );
    assert_eq!(
        exchange(port, &mqtt31, Duration::from_secs(10)),
        (vec![0x20, 0x02, 0x00, 0x01], End::Closed)
    );
}

/// A client sending more QoS 2 PUBLISHes than the Receive Maximum gets DISCONNECT 0x93 and an
/// orderly close — its input still unread when the server gives up must not turn the close
/// into a reset, which would throw the DISCONNECT away [MQTT-3.3.4-9, 4.13.1-1].
#[test]
fn mqtt_server_disconnect_reaches_a_client_that_is_still_sending() {
    let (_adapter, port, _dir) = mqtt_adapter("[mqtt]\nreceive_maximum = 10\n");
    let mut bytes = connect5("flood", 0x02, &[]);
    for id in 1..=3000u16 {
        let body = [&string(b"f")[..], &id.to_be_bytes(), &[0], &[b'x'; 16]].concat();
        bytes.extend(packet(0x34, &body));
    }
    let (got, end) = exchange(port, &bytes, Duration::from_secs(15));
    assert_eq!(
        end,
        End::Closed,
        "an orderly close, not a reset ({} bytes read)",
        got.len()
    );
    let p = packets(&got);
    assert_eq!(p.first().map(|p| p.0), Some(0x20), "CONNACK first");
    assert_eq!(
        p.last().map(|p| (p.0, p.1[0])),
        Some((0xe0, 0x93)),
        "DISCONNECT 0x93 last: {:?}",
        p.last()
    );
}

/// With anonymous access allowed on the listener and no users configured, a client that sends
/// a user name and password is let in as anonymous (as Mosquitto with `allow_anonymous true`
/// and no password file); with users configured, wrong credentials are still refused.
#[test]
fn mqtt_credentials_where_no_users_are_configured() {
    if !have("mosquitto_pub") {
        return;
    }
    let (_adapter, port, dir) = mqtt_adapter("");
    for v in ["mqttv311", "mqttv5"] {
        let st = mosquitto("mosquitto_pub", port)
            .args([
                "-V", v, "-u", "bob", "-P", "whatever", "-t", "creds", "-q", "1", "-m", v,
            ])
            .status()
            .expect("mosquitto_pub");
        assert!(
            st.success(),
            "{v}: a user name where no users are configured is let in"
        );
    }
    let dump = wharf(&format!("file://{}", dir.path().join("store").display()))
        .args(["dump", "mqtt-default"])
        .output()
        .expect("dump");
    assert_eq!(json_lines(&String::from_utf8_lossy(&dump.stdout)).len(), 2);
    // With a users file: the wrong password is refused.
    let users = dir.path().join("users.toml");
    let hash = wharf_tests::user_hash("right");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n"),
    )
    .expect("users");
    let (_with_users, port2, _d) = mqtt_adapter(&format!(
        "[auth]\nusers_file = {:?}\n",
        users.display().to_string()
    ));
    let wrong = mosquitto("mosquitto_pub", port2)
        .args(["-u", "bob", "-P", "wrong", "-t", "creds", "-m", "x"])
        .output()
        .expect("mosquitto_pub");
    assert!(
        !wrong.status.success(),
        "wrong password refused where users are configured"
    );
    let right = mosquitto("mosquitto_pub", port2)
        .args(["-u", "bob", "-P", "right", "-t", "creds", "-m", "x"])
        .status()
        .expect("mosquitto_pub");
    assert!(right.success());
}

/// Connections that never send CONNECT cannot keep real clients out: with `max_handshakes`
/// places, a new connection evicts the one that has waited longest.
#[test]
fn mqtt_idle_connections_cannot_starve_real_clients() {
    if !have("mosquitto_pub") {
        return;
    }
    let (_adapter, port, _dir) =
        mqtt_adapter("[mqtt]\nmax_handshakes = 4\nconnect_timeout = \"60s\"\n");
    let idle = idle_connections(port, 8);
    let st = mosquitto("mosquitto_pub", port)
        .args(["-t", "real", "-q", "1", "-m", "through"])
        .status()
        .expect("mosquitto_pub");
    assert!(
        st.success(),
        "a real client gets in past 8 idle connections"
    );
    oldest_evicted(idle);
}

fn run_python(script: &str, args: &[String]) {
    let Some(py) = python() else { return };
    let out = Command::new(py)
        .arg(python_script(script))
        .args(args)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{stdout}");
}

/// A Paho client resuming its session with Clean Start 0 and no Session Expiry Interval (its
/// default) gets the session and its queued messages; the session then ends with that
/// connection [MQTT-3.1.2-4, 3.1.2-23].
#[test]
fn mqtt_session_resumed_without_session_expiry_with_paho() {
    // The local filesystem and the first S3-compatible server.
    let (urls, _dir) = stores();
    for url in urls.iter().take(2) {
        let port = free_port();
        let _adapter = start_adapter(url, port);
        run_python(
            "mqtt5_resume_without_expiry.py",
            &["127.0.0.1".into(), port.to_string()],
        );
        eprintln!("{url}: resumed without Session Expiry");
    }
}

// ---- AMQP ----------------------------------------------------------------------------------

/// A `wharf adapter` with AMQP only on `store`, with `config` settings; returns its port.
fn amqp_adapter(store: &str, dir: &std::path::Path, name: &str, config: &str) -> (KillOnDrop, u16) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).expect("config");
    let port = free_port();
    (start_amqp_adapter(store, port, Some(&cfg), &[]), port)
}

/// Drain sends what is available first — what is in the store, also when another adapter
/// stored it — then uses up the rest of the credit (AMQP 1.0 2.6.7). Qpid Proton.
#[test]
fn amqp_drain_delivers_what_another_adapter_stored() {
    // The local filesystem and the first S3-compatible server.
    let (urls, dir) = stores();
    for store in urls.iter().take(2) {
        // Adapters learn of each other's appends only every 5 s unless they look.
        let slow = "[log]\npoll_interval = \"5s\"\n";
        let (_a, port_a) = amqp_adapter(store, dir.path(), "a", slow);
        let (_b, port_b) = amqp_adapter(store, dir.path(), "b", slow);
        run_python(
            "amqp_drain_across_adapters.py",
            &[
                format!("amqp://127.0.0.1:{port_a}"),
                format!("amqp://127.0.0.1:{port_b}"),
            ],
        );
        eprintln!("{store}: drain across adapters");
    }
}

/// Connections that never finish their AMQP handshake are closed after `handshake_timeout`:
/// silent, a partial protocol header, only the AMQP header, only the SASL header, SASL done
/// but no open.
#[test]
fn amqp_handshakes_that_never_finish_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().join("store").display());
    let (_a, port) = amqp_adapter(
        &store,
        dir.path(),
        "a",
        "[amqp]\nhandshake_timeout = \"1s\"\n",
    );
    // SASL ANONYMOUS init, after the SASL header: performative 0x41 [mechanism].
    let sasl_init = [
        0, 0, 0, 0x19, 2, 1, 0, 0, 0x00, 0x53, 0x41, 0xc0, 0x0c, 0x01, 0xa3, 0x09,
    ]
    .iter()
    .copied()
    .chain(*b"ANONYMOUS")
    .collect::<Vec<u8>>();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", vec![]),
        ("a partial header", b"AMQ".to_vec()),
        ("the AMQP header", b"AMQP\x00\x01\x00\x00".to_vec()),
        ("the SASL header", b"AMQP\x03\x01\x00\x00".to_vec()),
        (
            "SASL done, no open",
            [
                &b"AMQP\x03\x01\x00\x00"[..],
                &sasl_init,
                b"AMQP\x00\x01\x00\x00",
            ]
            .concat(),
        ),
    ];
    let socks: Vec<(&str, TcpStream)> = cases
        .into_iter()
        .map(|(what, bytes)| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(&bytes).expect("write");
            (what, s)
        })
        .collect();
    for (what, mut s) in socks {
        let (_, end) = read_until_end(&mut s, Duration::from_secs(10));
        assert_ne!(
            end,
            End::Open,
            "{what}: closed after handshake_timeout (1 s)"
        );
    }
}

/// Idle connections cannot keep AMQP clients out: with `max_handshakes` places, a new
/// connection evicts the longest waiting; a Proton client then works. Also: SASL PLAIN where
/// no users are configured is let in as anonymous (loopback listener).
#[test]
fn amqp_idle_connections_cannot_starve_real_clients() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().join("store").display());
    let (_a, port) = amqp_adapter(
        &store,
        dir.path(),
        "a",
        "[amqp]\nmax_handshakes = 4\nhandshake_timeout = \"60s\"\n",
    );
    let idle = idle_connections(port, 8);
    let client = format!(
        r#"
from proton import Message
from proton.utils import BlockingConnection
c = BlockingConnection("amqp://127.0.0.1:{port}", timeout=15, user="bob", password="anything", allowed_mechs="PLAIN")
c.create_sender("q").send(Message(body="through"))
r = c.create_receiver("q", credit=1)
assert r.receive(timeout=10).body == "through"
r.accept()
c.close()
print("ok")
"#
    );
    let out = Command::new(py)
        .arg("-c")
        .arg(client)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "a Proton client past 8 idle connections, with PLAIN where no users are configured: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    oldest_evicted(idle);
}

/// The server's close reaches a peer that is still sending: a frame over max-frame-size
/// followed by more input gets close with `amqp:connection:framing-error` and an orderly end,
/// not a reset.
#[test]
fn amqp_close_reaches_a_peer_that_is_still_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().join("store").display());
    let (_a, port) = amqp_adapter(&store, dir.path(), "a", "");
    let bytes = [
        &b"AMQP\x00\x01\x00\x00"[..],
        &[0x7f, 0, 0, 0, 2, 0, 0, 0],
        &vec![0u8; 1 << 20],
    ]
    .concat();
    let (got, end) = exchange(port, &bytes, Duration::from_secs(15));
    assert_eq!(end, End::Closed, "an orderly close, not a reset");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("amqp:connection:framing-error"), "{text}");
}

/// AMQP frames after the 8-byte protocol header: (frame size, body after the frame header).
fn amqp_frames(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let doff = usize::from(b[4]) * 4;
        let Some(frame) = b.get(..size as usize) else {
            break;
        };
        out.push((size, frame.get(doff..).unwrap_or_default().to_vec()));
        b = &b[size as usize..];
    }
    out
}

/// Heartbeats and the idle timeout (AMQP 1.0 2.4.5), both ways: a peer that asks
/// for an idle timeout of 500 ms gets empty frames while it is silent, and after the server's
/// own idle timeout (1 s here, announced in its open) a close with
/// `amqp:resource-limit-exceeded`. Raw bytes, not Proton: Python Proton 0.40 with a 2 s idle
/// timeout kept a connection whose server sent no heartbeats for 5 s, so it could not tell.
#[test]
fn amqp_heartbeats_and_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().join("store").display());
    let (_a, port) = amqp_adapter(&store, dir.path(), "a", "[amqp]\nidle_timeout = \"1s\"\n");
    // open: container-id "x", hostname, max-frame-size and channel-max absent, idle-time-out 500.
    let open = [
        0x00, 0x53, 0x10, 0xc0, 0x0c, 0x05, 0xa1, 0x01, b'x', 0x40, 0x40, 0x40, 0x70, 0, 0, 0x01,
        0xf4,
    ];
    let frame = [&(25u32.to_be_bytes())[..], &[2, 0, 0, 0], &open].concat();
    let start = Instant::now();
    let (got, end) = exchange(
        port,
        &[&b"AMQP\x00\x01\x00\x00"[..], &frame].concat(),
        Duration::from_secs(10),
    );
    let took = start.elapsed();
    assert_eq!(end, End::Closed, "closed for silence within 10 s: {got:?}");
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s idle timeout"
    );
    assert!(got.starts_with(b"AMQP\x00\x01\x00\x00"), "{got:?}");
    let frames = amqp_frames(&got[8..]);
    let (_, server_open) = frames.first().expect("the server's open");
    assert!(server_open.starts_with(&[0x00, 0x53, 0x10]), "{frames:?}");
    assert!(
        server_open
            .windows(5)
            .any(|w| w == [0x70, 0, 0, 0x03, 0xe8]),
        "the server's open announces idle-time-out 1000 ms: {server_open:?}"
    );
    let heartbeats = frames.iter().filter(|(size, _)| *size == 8).count();
    assert!(
        heartbeats >= 2,
        "empty frames while the peer was silent (asked for every 250 ms): {heartbeats} in {took:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("amqp:resource-limit-exceeded"), "{text}");
}
