//! The MQTT adapter with third-party clients (Debian `mosquitto-clients`) against the real
//! binary: two adapter processes on one store, and bad input.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use wharf_tests::{free_port, have, json_lines, mosquitto, start_adapter, stores, wharf};

#[test]
fn publish_on_one_adapter_subscribe_on_another() {
    if !have("mosquitto_pub") {
        return;
    }
    let (urls, _dir) = stores();
    for url in urls {
        let (pa, pb) = (free_port(), free_port());
        let mut a = start_adapter(&url, pa);
        let mut b = start_adapter(&url, pb);
        // Subscriber on B: wildcard, QoS 1, exits after 4 messages.
        let sub = mosquitto("mosquitto_sub", pb)
            .args(["-t", "site/+/temp", "-t", "alerts/#"])
            .args(["-q", "1", "-v", "-C", "4", "-W", "30", "-i", "sub-b"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        std::thread::sleep(Duration::from_millis(500)); // let it subscribe
        for (topic, qos, msg) in [
            ("site/1/temp", "0", "21.5"),
            ("site/2/temp", "1", "22.0"),
            ("site/2/humidity", "1", "not matched"),
            ("alerts/fire/now", "2", "evacuate"),
            ("alerts", "1", "parent level matches alerts/#"),
        ] {
            let st = mosquitto("mosquitto_pub", pa)
                .args(["-t", topic, "-q", qos, "-m", msg])
                .status()
                .expect("mosquitto_pub");
            assert!(st.success(), "{url}: publish {topic} at QoS {qos}");
        }
        let out = sub.wait_with_output().expect("sub");
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{url}: subscriber got {got:?}");
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines,
            vec![
                "site/1/temp 21.5",
                "site/2/temp 22.0",
                "alerts/fire/now evacuate",
                "alerts parent level matches alerts/#"
            ],
            "{url}"
        );
        // Every publish was stored once, as received.
        let dump = wharf(&url)
            .args(["dump", "mqtt-default"])
            .output()
            .expect("dump");
        let stored = json_lines(&String::from_utf8_lossy(&dump.stdout));
        let keys: Vec<&str> = stored
            .iter()
            .map(|r| r["key"].as_str().expect("topic"))
            .collect();
        assert_eq!(
            keys,
            [
                "site/1/temp",
                "site/2/temp",
                "site/2/humidity",
                "alerts/fire/now",
                "alerts"
            ]
        );
        let _ = a.kill();
        let _ = b.kill();
        let _ = (a.wait(), b.wait());
        eprintln!("{url}: mosquitto pub on A -> sub on B: 4/4, 5 stored");
    }
}

/// Read until the server closes the connection (or 5 s pass); returns what it sent.
fn until_closed(mut s: TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[test]
fn bad_input_closes_the_connection_and_the_adapter_lives_on() {
    if !have("mosquitto_pub") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let port = free_port();
    let mut adapter = start_adapter(&url, port);
    let connect = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(bytes).expect("write");
        until_closed(s)
    };
    // Garbage, a PUBLISH before CONNECT, a bad remaining length.
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'][..],
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
    ] {
        let (reply, closed) = connect(bytes);
        assert!(closed, "{bytes:?}: connection closed");
        assert!(
            reply.is_empty(),
            "{bytes:?}: MQTT 3.1.1 closes without a reply, got {reply:?}"
        );
    }
    // A wildcard in a PUBLISH topic after a good CONNECT: CONNACK, then closed.
    let connect_pkt = [
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'x',
    ];
    let publish_wild = [0x30, 0x05, 0x00, 0x01, b'#', b'h', b'i'];
    let (reply, closed) = connect(&[&connect_pkt[..], &publish_wild[..]].concat());
    assert_eq!(reply, vec![0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    assert!(closed);
    // The adapter still serves, and nothing bad was stored.
    let st = mosquitto("mosquitto_pub", port)
        .args(["-t", "ok", "-q", "1", "-m", "fine"])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
    let dump = wharf(&url)
        .args(["dump", "mqtt-default"])
        .output()
        .expect("dump");
    let stored = json_lines(&String::from_utf8_lossy(&dump.stdout));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["payload"], "fine");
    let _ = adapter.kill();
    let _ = adapter.wait();
}

/// `kill -9` of the adapter a QoS 1 publisher (Paho) is connected to, mid-stream: every message
/// it acknowledged is delivered by the other adapter to a subscriber that was already there.
#[test]
fn acknowledged_qos1_messages_survive_kill_9_of_the_adapter() {
    if !have("mosquitto_sub") {
        return;
    }
    let Some(python) = std::env::var_os("WHARF_PYTHON") else {
        assert!(std::env::var_os("CI").is_none(), "CI must set WHARF_PYTHON");
        return;
    };
    let (urls, _dir) = stores();
    for url in urls {
        let (pa, pb) = (free_port(), free_port());
        let mut a = start_adapter(&url, pa);
        let mut b = start_adapter(&url, pb);
        let sub = mosquitto("mosquitto_sub", pb)
            .args(["-t", "stream/k9", "-q", "1"])
            .args(["-W", "12", "-i", "k9-sub"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        std::thread::sleep(Duration::from_millis(500));
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/mqtt_acked_publisher.py"
        );
        let mut publisher = Command::new(&python)
            .args([script, "127.0.0.1", &pa.to_string(), "stream/k9", "100000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("publisher");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            publisher.stdout.take().expect("stdout"),
        ));
        let mut acked = Vec::new();
        while acked.len() < 300 {
            match lines.next() {
                Some(Ok(l)) => acked.push(l),
                _ => break,
            }
        }
        wharf_tests::signal(a.id(), "KILL");
        let _ = a.wait();
        acked.extend(lines.map_while(Result::ok));
        let _ = publisher.wait();
        assert!(
            acked.len() >= 300,
            "{url}: only {} acknowledged before the kill",
            acked.len()
        );
        // The subscriber times out (-W) after the stream goes quiet; collect what it got.
        let out = sub.wait_with_output().expect("sub");
        let received: std::collections::HashSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let lost: Vec<&str> = acked
            .iter()
            .map(|l| l.trim_start_matches("acked "))
            .filter(|p| !received.contains(*p))
            .collect();
        assert!(
            lost.is_empty(),
            "{url}: {} acknowledged but not delivered, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let _ = b.kill();
        let _ = b.wait();
        eprintln!(
            "{url}: {} acknowledged before kill -9, all delivered by the other adapter",
            acked.len()
        );
    }
}
