//! The MQTT adapter with third-party clients (Debian `mosquitto-clients`) against the real
//! binary: two adapter processes on one store, and bad input.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use wharf_tests::{
    free_port, have, json_lines, mosquitto, ok_lines, python, python_script, run_checked,
    start_adapter, stores, wharf,
};

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
        let mut cmd = mosquitto("mosquitto_sub", pb);
        cmd.args(["-t", "site/+/temp", "-t", "alerts/#"])
            .args(["-q", "1", "-v", "-C", "4", "-W", "30", "-i", "sub-b"]);
        let sub = wharf_tests::Subscriber::start(cmd);
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
        let (status, lines) = sub.wait();
        assert!(status.success(), "{url}: subscriber got {lines:?}");
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
    // MQTT 5: the same violations get a DISCONNECT with the reason code before the close.
    let connect5 = [
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x01,
        b'y',
    ];
    let publish5_wild = [0x30, 0x06, 0x00, 0x01, b'#', 0x00, b'h', b'i'];
    // A PUBLISH announcing 2 MiB, over the 1 MiB maximum packet size.
    let publish5_huge = [0x30, 0x80, 0x80, 0x80, 0x01];
    for (bad, code) in [(&publish5_wild[..], 0x90u8), (&publish5_huge[..], 0x95)] {
        let (reply, closed) = connect(&[&connect5[..], bad].concat());
        assert!(closed, "v5: closed after {code:#x}");
        assert_eq!(
            reply.first(),
            Some(&0x20),
            "v5: CONNACK first, got {reply:?}"
        );
        let connack_len = 2 + usize::from(reply[1]);
        assert_eq!(
            reply
                .get(connack_len..connack_len + 3)
                .map(|d| (d[0], d[2])),
            Some((0xe0, code)),
            "v5: DISCONNECT with reason {code:#x}, got {reply:?}"
        );
    }
    // MQTT 3.1 (protocol level 3) is refused with CONNACK 0x01.
    let mqtt31 = [
        0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00,
        0x01, b'z',
    ];
    assert_eq!(connect(&mqtt31), (vec![0x20, 0x02, 0x00, 0x01], true));
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

/// `kill -9` of the adapter a QoS 1 / QoS 2 publisher (Paho) is connected to, mid-stream: every
/// message it acknowledged is delivered by the other adapter to a subscriber that was already
/// there — at QoS 2 exactly once.
#[test]
fn acknowledged_qos1_and_qos2_messages_survive_kill_9_of_the_adapter() {
    if !have("mosquitto_sub") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let (urls, _dir) = stores();
    let runs = urls
        .iter()
        .flat_map(|u| [(u.clone(), "1"), (u.clone(), "2")]);
    for (url, qos) in runs {
        let (pa, pb) = (free_port(), free_port());
        let mut a = start_adapter(&url, pa);
        let mut b = start_adapter(&url, pb);
        let mut cmd = mosquitto("mosquitto_sub", pb);
        cmd.args(["-t", "stream/k9", "-q", qos, "-i", "k9-sub"]);
        let sub = wharf_tests::Subscriber::start(cmd);
        let script = python_script("mqtt_acked_publisher.py");
        let mut publisher = Command::new(&python)
            .arg(&script)
            .args(["127.0.0.1", &pa.to_string(), "stream/k9", "100000", qos])
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
        let st = publisher.wait().expect("publisher");
        assert!(st.success(), "{url} q{qos}: the publisher failed: {st}");
        assert!(
            acked.len() >= 300,
            "{url}: only {} acknowledged before the kill",
            acked.len()
        );
        // Wait until the subscriber has every acknowledged message (or 60 s), plus a moment
        // for duplicates to show.
        let want: std::collections::HashSet<String> = acked
            .iter()
            .map(|l| l.trim_start_matches("acked ").to_string())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let have: std::collections::HashSet<String> = sub.lines().into_iter().collect();
            if have.is_superset(&want) || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let lines: Vec<String> = sub.stop();
        let received: std::collections::HashSet<String> = lines.iter().cloned().collect();
        if qos == "2" {
            assert_eq!(
                lines.len(),
                received.len(),
                "{url}: QoS 2 delivered a message twice"
            );
        }
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
            "{url} QoS {qos}: {} acknowledged before kill -9, all delivered by the other adapter ({} received)",
            acked.len(),
            lines.len()
        );
    }
}

/// MQTT 5 features seen by Paho (paho-mqtt 2.x, MQTT 5): assigned client identifier, publish
/// properties and user property order end to end, subscription identifiers, request/response,
/// no-local, retain-as-published, inbound topic aliases, reason codes, server DISCONNECT,
/// session expiry.
#[test]
fn mqtt5_features_with_paho() {
    let Some(python) = python() else {
        return;
    };
    let (urls, _dir) = stores();
    // The features do not depend on the store; one local and one S3 store if there is one.
    for url in urls.iter().take(2) {
        let port = free_port();
        let _adapter = start_adapter(url, port);
        let mut paho = Command::new(&python);
        paho.arg(python_script("mqtt5_features.py"))
            .args(["127.0.0.1", &port.to_string()]);
        let text = run_checked(paho, &format!("Paho MQTT 5 features on {url}"));
        assert_eq!(ok_lines(&text), 11, "{text}");
        eprintln!("{url}:\n{text}");
    }
}

/// Will delay with Paho: a will comes after its delay, not at once; the session expiry caps
/// the delay; reconnecting within the delay cancels it (`tests/python/mqtt_will_delay.py`).
#[test]
fn will_delay_with_paho() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let port = free_port();
    let _adapter = start_adapter(&url, port);
    let mut paho = Command::new(&python);
    paho.arg(python_script("mqtt_will_delay.py"))
        .args(["127.0.0.1", &port.to_string()]);
    let text = run_checked(paho, "Paho will delay");
    assert_eq!(ok_lines(&text), 3, "{text}");
    eprintln!("{text}");
}

/// Session takeover across two adapters (DISCONNECT 0x8E, MQTT 3.1.1 closed), keep-alive
/// (raw bytes: a silent client is closed, MQTT 5 with 0x8D), receive maximum and outbound topic
/// aliases, with Paho (`tests/python/mqtt_protocol_limits.py`).
#[test]
fn takeover_keep_alive_receive_maximum_and_aliases_with_paho() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let (pa, pb) = (free_port(), free_port());
    let _a = start_adapter(&url, pa);
    let _b = start_adapter(&url, pb);
    let mut paho = Command::new(&python);
    paho.arg(python_script("mqtt_protocol_limits.py")).args([
        "127.0.0.1",
        &pa.to_string(),
        &pb.to_string(),
    ]);
    let text = run_checked(paho, "Paho protocol limits");
    assert_eq!(ok_lines(&text), 6, "{text}");
    eprintln!("{text}");
}

/// Retained messages with mosquitto clients on two adapters: set and replaced on A, cleared
/// with an empty payload, delivered with the retain flag to a wildcard subscriber on B, and
/// without it to a subscriber that was already there.
#[test]
fn retained_messages_are_shared_by_adapters() {
    if !have("mosquitto_pub") {
        return;
    }
    let (urls, _dir) = stores();
    for url in urls {
        let (pa, pb) = (free_port(), free_port());
        let mut a = start_adapter(&url, pa);
        let mut b = start_adapter(&url, pb);
        let publish = |port, args: &[&str]| {
            let st = mosquitto("mosquitto_pub", port)
                .args(["-q", "1"])
                .args(args)
                .status()
                .expect("mosquitto_pub");
            assert!(st.success(), "{url}: publish {args:?}");
        };
        publish(pa, &["-r", "-t", "home/lamp", "-m", "on"]);
        publish(pa, &["-r", "-t", "home/door", "-m", "closed"]);
        publish(pa, &["-r", "-t", "home/temp", "-m", "20"]);
        publish(pa, &["-r", "-t", "home/temp", "-m", "21"]); // replaces
        publish(pa, &["-r", "-t", "home/door", "-n"]); // clears
        publish(pa, &["-t", "home/plain", "-m", "not retained"]);
        let sub = |port, filter: &str, count: &str| {
            mosquitto("mosquitto_sub", port)
                .args(["-t", filter, "-q", "1", "-C", count, "-W", "3"])
                .args(["-F", "%r %t %p"])
                .output()
                .expect("mosquitto_sub")
        };
        let out = sub(pb, "home/#", "2");
        assert!(out.status.success(), "{url}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .collect::<Vec<_>>(),
            ["1 home/lamp on", "1 home/temp 21"],
            "{url}"
        );
        // Nothing retained for the cleared topic: the subscriber times out empty.
        let out = sub(pb, "home/door", "1");
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{url}: {out:?}"
        );
        // An established subscription gets new retained publishes with retain 0 [MQTT-3.3.1-9].
        let mut cmd = mosquitto("mosquitto_sub", pb);
        cmd.args(["-t", "live/+", "-q", "1", "-C", "1", "-W", "10"])
            .args(["-F", "%r %t %p"]);
        let live = wharf_tests::Subscriber::start(cmd);
        publish(pa, &["-r", "-t", "live/x", "-m", "now"]);
        let (_, lines) = live.wait();
        assert_eq!(lines, vec!["0 live/x now".to_string()], "{url}");
        let _ = (a.kill(), b.kill());
        let _ = (a.wait(), b.wait());
        eprintln!("{url}: retained set/replace/clear on A seen on B");
    }
}

/// `mqtt-retained` is compacted: after 1,200 retained publishes to 20 topics (and one
/// cleared), the adapter snapshots the 19 retained messages and trims the stream to them; a
/// new adapter on the store serves exactly the latest retained message of each topic.
#[test]
fn retained_stream_is_compacted() {
    if !have("mosquitto_pub") {
        return;
    }
    let (urls, dir) = stores();
    let settings = dir.path().join("compact.toml");
    std::fs::write(&settings, "[mqtt]\ncompact_every = \"1s\"\n").expect("settings");
    for url in urls.iter().take(2) {
        let port = free_port();
        let mut a = wharf_tests::start_adapter_with_config(url, port, &settings);
        for t in 0..20 {
            let mut p = mosquitto("mosquitto_pub", port)
                .args(["-q", "1", "-r", "-l", "-t", &format!("cmp/{t}")])
                .stdin(Stdio::piped())
                .spawn()
                .expect("mosquitto_pub");
            let lines: String = (0..60).map(|i| format!("t{t}-v{i}\n")).collect();
            if let Some(mut stdin) = p.stdin.take() {
                stdin.write_all(lines.as_bytes()).expect("stdin");
            }
            assert!(p.wait().expect("pub").success(), "{url}: publish cmp/{t}");
        }
        let cleared = mosquitto("mosquitto_pub", port)
            .args(["-q", "1", "-r", "-n", "-t", "cmp/19"])
            .status()
            .expect("mosquitto_pub");
        assert!(cleared.success());
        // 1,201 records; compaction (every second, once over 1,024) appends one copy per
        // retained topic as of the head it read, and trims the stream to that head.
        let retained = || {
            let out = wharf(url)
                .args(["streams", "--json"])
                .output()
                .expect("streams");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["stream"] == "mqtt-retained")
                .map(|v| (v["start_offset"].as_u64(), v["next_offset"].as_u64()))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = retained();
        while seen.is_none_or(|(start, _)| start == Some(0)) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(300));
            seen = retained();
        }
        // Compaction runs once the stream holds over 1,024 records, maybe while publishes
        // still come (topic t's 60 are offsets 60t..60t+59, the clear 1,200): it trims to the
        // head it read and appends one copy per topic retained then, after the 1,201 records.
        let (start, next) = match seen {
            Some((Some(start), Some(next))) => (start, next),
            other => panic!("{url}: mqtt-retained not listed: {other:?}"),
        };
        let copies = if start > 1200 { 19 } else { start.div_ceil(60) };
        assert!(
            (1024..=1201).contains(&start) && next == 1201 + copies,
            "{url}: compacted to one copy per topic: start {start}, next {next}"
        );
        let _ = a.kill();
        let _ = a.wait();
        // A new adapter reads the compacted stream.
        let port = free_port();
        let _b = start_adapter(url, port);
        let out = mosquitto("mosquitto_sub", port)
            .args([
                "-t", "cmp/#", "-q", "1", "-C", "20", "-W", "4", "-F", "%r %t %p",
            ])
            .output()
            .expect("mosquitto_sub");
        let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        got.sort();
        let mut want: Vec<String> = (0..19).map(|t| format!("1 cmp/{t} t{t}-v59")).collect();
        want.sort();
        assert_eq!(
            got, want,
            "{url}: the latest retained message of each topic, once"
        );
        eprintln!(
            "{url}: mqtt-retained compacted to offsets {start}..{next} ({} records)",
            next - start
        );
    }
}

/// Expired sessions are deleted: a session with a 5 s expiry, seen stored when its client
/// left, is gone from the store a few seconds after its expiry (`session_sweep_every = "1s"`),
/// while one with an hour's expiry is kept with its subscription.
#[test]
fn expired_sessions_are_deleted_from_the_store() {
    if !have("mosquitto_sub") {
        return;
    }
    let (urls, dir) = stores();
    let settings = dir.path().join("sweep.toml");
    std::fs::write(
        &settings,
        "[mqtt]\nsession_sweep_every = \"1s\"\nadapter_lease = \"2s\"\n",
    )
    .expect("settings");
    for url in urls.iter().take(2) {
        let port = free_port();
        let _a = wharf_tests::start_adapter_with_config(url, port, &settings);
        let run = format!("{}-{port}", std::process::id());
        let leave = |id: &str, expiry: &str| {
            // Subscribes, waits a second for a message that does not come, disconnects.
            let out = mosquitto("mosquitto_sub", port)
                .args([
                    "-V", "5", "-c", "-x", expiry, "-q", "1", "-t", "swept/#", "-W", "1",
                ])
                .args(["-i", id])
                .output()
                .expect("mosquitto_sub");
            assert!(out.stdout.is_empty(), "{url}: {out:?}");
        };
        let (short, long) = (format!("short-{run}"), format!("long-{run}"));
        let cursor = |id: &str| {
            let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
            let name = format!("mqtt-session.{hex}");
            let out = wharf(url)
                .args(["cursor", "mqtt-default", &name])
                .output()
                .expect("wharf cursor");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        };
        // Stored when it ends (so that "gone" below is the sweep, not a session never saved).
        leave(&short, "5");
        let stored = cursor(&short);
        assert_eq!(stored["exists"], true, "{url}: {stored}");
        assert_eq!(
            stored["meta"]["subscriptions"][0]["filter"], "swept/#",
            "{url}: {stored}"
        );
        leave(&long, "3600");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while cursor(&short)["exists"] == true {
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: expired session still stored: {}",
                cursor(&short)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let kept = cursor(&long);
        assert_eq!(kept["exists"], true, "{url}: {kept}");
        assert_eq!(
            kept["meta"]["subscriptions"][0]["filter"], "swept/#",
            "{url}: {kept}"
        );

        // A session resumed and idle longer than its expiry is not swept while connected
        // (its expiry counts from its next disconnect, not its previous one).
        let back = format!("back-{run}");
        // Left with a long expiry, so the sweeper cannot take it before Paho is back; Paho
        // resumes it with 2 s.
        leave(&back, "30");
        // Paho resumes without subscribing again (mosquitto_sub always does, which saves the
        // session anyway).
        if let Some(py) = python() {
            // It stays connected until its stdin closes.
            let code = "import sys\n\
                import paho.mqtt.client as mqtt\n\
                from paho.mqtt.properties import Properties\n\
                from paho.mqtt.packettypes import PacketTypes\n\
                c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sys.argv[2], protocol=mqtt.MQTTv5)\n\
                p = Properties(PacketTypes.CONNECT)\n\
                p.SessionExpiryInterval = 2\n\
                c.connect('127.0.0.1', int(sys.argv[1]), clean_start=False, properties=p)\n\
                c.loop_start()\n\
                sys.stdin.read()\n\
                c.disconnect()\n\
                c.loop_stop()\n";
            let mut resumed = wharf_tests::KillOnDrop(
                Command::new(py)
                    .args(["-c", code, &port.to_string(), &back])
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("paho"),
            );
            // Resumed: the session is saved as connected ...
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while !cursor(&back)["meta"]["disconnected_ms"].is_null() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{url}: the resumed session is not saved as connected: {}",
                    cursor(&back)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            // ... and stays so for longer than its expiry, with sweeps every second (time
            // passing is what is tested here).
            std::thread::sleep(Duration::from_secs(3));
            let connected = cursor(&back);
            assert_eq!(connected["exists"], true, "{url}: {connected}");
            assert!(
                connected["meta"]["disconnected_ms"].is_null(),
                "{url}: {connected}"
            );
            assert_eq!(
                connected["meta"]["subscriptions"][0]["filter"], "swept/#",
                "{url}: {connected}"
            );
            drop(resumed.stdin.take());
            let st = resumed.wait().expect("paho");
            assert!(st.success(), "{url}: the resuming client failed: {st}");
        }

        // A session whose adapter is killed has no recorded end: the sweeper finds the
        // adapter's lease expired and counts the expiry (2 s) from then.
        let port_b = free_port();
        let mut b = wharf_tests::start_adapter_with_config(url, port_b, &settings);
        let orphan = format!("orphan-{run}");
        let mut client = wharf_tests::KillOnDrop(
            mosquitto("mosquitto_sub", port_b)
                .args(["-V", "5", "-c", "-x", "2", "-q", "1", "-t", "swept/#"])
                .args(["-i", &orphan])
                .stdout(Stdio::null())
                .spawn()
                .expect("mosquitto_sub"),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while cursor(&orphan)["meta"]["subscriptions"][0]["filter"] != "swept/#" {
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: session stored"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wharf_tests::signal(b.id(), "KILL");
        let _ = b.wait();
        let _ = client.kill();
        let killed = std::time::Instant::now();
        let deadline = killed + Duration::from_secs(30);
        while cursor(&orphan)["exists"] == true {
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: the dead adapter's expired session still stored: {}",
                cursor(&orphan)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!(
            "{url}: expired session deleted, live one kept; a dead adapter's session deleted {:.1} s after kill -9",
            killed.elapsed().as_secs_f64()
        );
    }
}

/// An address declared while adapters run claims its topics for subscriptions made before:
/// a plain and a shared MQTT subscriber on adapter B to `late/#`, and a Qpid Proton receiver
/// on B's `/topic/late/#`, get `late/0` (stored in the default address) and, after `wharf
/// address apply` of a topic address claiming `late/#`, `late/1` from adapter A (stored in
/// the new address's stream).
#[test]
fn addresses_declared_later_reach_existing_subscribers() {
    if !have("mosquitto_sub") {
        return;
    }
    let (urls, dir) = stores();
    let declared = dir.path().join("latecomers.json");
    std::fs::write(
        &declared,
        r#"{"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "latecomers"},
            "spec": {"type": "topic", "mqtt_topics": ["late/#"]}}"#,
    )
    .expect("address file");
    let python = python();
    for url in urls.iter().take(2) {
        let (pa, pb, amqp_b) = (free_port(), free_port(), free_port());
        let _a = start_adapter(url, pa);
        let _b = wharf_tests::KillOnDrop(
            wharf(url)
                .args(["adapter", "--mqtt", &format!("127.0.0.1:{pb}")])
                .args(["--amqp", &format!("127.0.0.1:{amqp_b}")])
                .stdout(Stdio::null())
                .spawn()
                .expect("adapter B"),
        );
        wharf_tests::wait_for_port(pb);
        wharf_tests::wait_for_port(amqp_b);
        // Qpid Proton: two messages from /topic/late/#, as "subject body" lines.
        let mut amqp = python.as_ref().map(|py| {
            let code = "import sys\n\
                from proton.utils import BlockingConnection\n\
                c = BlockingConnection(sys.argv[1], timeout=40)\n\
                r = c.create_receiver('/topic/late/#', credit=10)\n\
                print('attached', flush=True)\n\
                for _ in range(2):\n\
                \x20   m = r.receive(timeout=40)\n\
                \x20   r.accept()\n\
                \x20   print(m.subject, bytes(m.body).decode(), flush=True)\n\
                c.close()\n";
            let mut child = wharf_tests::KillOnDrop(
                Command::new(py)
                    .args(["-c", code, &format!("amqp://127.0.0.1:{amqp_b}")])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("proton"),
            );
            let lines = collect_lines(&mut child);
            (child, lines)
        });
        // Each returns once its SUBACK came.
        let subscriber = |filter: &str| {
            let mut cmd = mosquitto("mosquitto_sub", pb);
            cmd.args([
                "-t", filter, "-q", "1", "-C", "2", "-W", "30", "-F", "%t %p",
            ]);
            wharf_tests::Subscriber::start(cmd)
        };
        let plain = subscriber("late/#");
        let shared = subscriber("$share/g/late/#");
        if let Some((_, lines)) = &amqp {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !lines.lock().expect("lines").iter().any(|l| l == "attached") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{url}: AMQP receiver attached"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let publish = |topic: &str, payload: &str| {
            let st = mosquitto("mosquitto_pub", pa)
                .args(["-t", topic, "-q", "1", "-m", payload])
                .status()
                .expect("mosquitto_pub");
            assert!(st.success());
        };
        publish("late/0", "before");
        let applied = wharf(url)
            .args(["address", "apply", "--file"])
            .arg(&declared)
            .output()
            .expect("address apply");
        assert!(applied.status.success(), "{url}: {applied:?}");
        // Adapters look for claims every 2 s, the subscriber for changes every second and
        // the shared group at its lease renewal (a third of 10 s).
        std::thread::sleep(Duration::from_secs(5));
        publish("late/1", "after");
        let (_, got_plain) = plain.wait();
        let (_, got_shared) = shared.wait();
        assert_eq!(got_plain, ["late/0 before", "late/1 after"], "{url}: plain");
        assert_eq!(
            got_shared,
            ["late/0 before", "late/1 after"],
            "{url}: shared"
        );
        if let Some((mut child, lines)) = amqp.take() {
            let _ = child.wait();
            let got = lines.lock().expect("lines").clone();
            assert_eq!(
                got,
                ["attached", "late/0 before", "late/1 after"],
                "{url}: AMQP /topic/late/#"
            );
        }
        let dump = wharf(url)
            .args(["dump", "latecomers"])
            .output()
            .expect("dump");
        let keys: Vec<String> = json_lines(&String::from_utf8_lossy(&dump.stdout))
            .iter()
            .filter_map(|r| r["key"].as_str().map(str::to_string))
            .collect();
        assert_eq!(keys, ["late/1"], "{url}: stored in the new address");
        eprintln!("{url}: a claim declared later reached existing subscribers");
    }
}

/// A device on `port` (mosquitto_sub as client `id`, `extra` arguments such as credentials)
/// with a QoS 1 will "offline" on `status/<id>`; returns once its will is registered in
/// `tenant`'s `mqtt-wills` in the store at `url` (so that any adapter can publish it).
fn device_with_will(
    url: &str,
    tenant: &str,
    port: u16,
    id: &str,
    extra: &[&str],
) -> wharf_tests::KillOnDrop {
    let device = wharf_tests::KillOnDrop(
        mosquitto("mosquitto_sub", port)
            .args(extra)
            .args(["-t", &format!("cmd/{id}"), "-i", id, "-k", "60"])
            .args(["--will-topic", &format!("status/{id}")])
            .args(["--will-payload", "offline", "--will-qos", "1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("device"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dump = wharf(url)
            .args(["--tenant", tenant, "dump", "mqtt-wills"])
            .output()
            .expect("dump");
        let registered = json_lines(&String::from_utf8_lossy(&dump.stdout))
            .iter()
            .any(|r| r["key"] == id);
        if registered {
            return device;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url}: the will of {id} was never registered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of a long output, for assertion messages.
fn tail(lines: &[String]) -> String {
    let from = lines.len().saturating_sub(8);
    format!("({} lines) ...{:?}", lines.len(), &lines[from..])
}

/// Read a child's stdout lines into a shared list, in a thread.
fn collect_lines(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("stdout piped");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            sink.lock().expect("lines").push(l);
        }
    });
    lines
}

/// Unacknowledged deliveries are resent with DUP after the adapter dies: a Paho subscriber
/// (clean session off) holds 5 QoS 1 messages unacknowledged on A; `kill -9` A (its "sent up
/// to" mark may be up to a second old); on B the 5 come again with DUP set and session
/// present, and the 2 published after the move come without DUP.
#[test]
fn unacknowledged_deliveries_resent_with_dup_after_kill_9() {
    let Some(python) = python() else {
        return;
    };
    let (urls, _dir) = stores();
    for url in urls.iter().take(2) {
        let (pa, pb) = (free_port(), free_port());
        let mut a = start_adapter(url, pa);
        let _b = start_adapter(url, pb);
        let mut client = wharf_tests::KillOnDrop(
            Command::new(&python)
                .arg(python_script("mqtt_dup_after_crash.py"))
                .args([pa.to_string(), pb.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("paho"),
        );
        let lines = collect_lines(&mut client);
        let wait_for = |what: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            while !lines
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.starts_with(what))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{url}: no {what:?}: {:?}",
                    lines.lock().expect("lines")
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for("holding");
        wharf_tests::signal(a.id(), "KILL");
        let _ = a.wait();
        wait_for("done");
        let got = lines.lock().expect("lines").clone();
        let on = |adapter: &str| -> Vec<&str> {
            got.iter()
                .filter_map(|l| l.strip_suffix(adapter))
                .filter(|l| l.starts_with("got"))
                .map(str::trim_end)
                .collect()
        };
        let (before, mut after) = (on("on=A"), on("on=B"));
        after.sort();
        assert_eq!(before.len(), 5, "{url}: {got:?}");
        assert!(
            before.iter().all(|l| l.contains("dup=0")),
            "{url}: first deliveries without DUP: {got:?}"
        );
        assert_eq!(
            after,
            [
                "got m0 dup=1 present=1",
                "got m1 dup=1 present=1",
                "got m2 dup=1 present=1",
                "got m3 dup=1 present=1",
                "got m4 dup=1 present=1",
                "got n0 dup=0 present=1",
                "got n1 dup=0 present=1",
            ],
            "{url}: {got:?}"
        );
        let st = client.wait().expect("paho");
        assert!(st.success(), "{url}: the client failed: {st}");
        eprintln!("{url}: 5 resent with DUP after kill -9, 2 new without");
    }
}

/// A persistent session moves: a Paho subscriber (clean session off) on adapter A, a Paho
/// publisher on adapter B; `kill -9` of A mid-stream; the subscriber reconnects to B, which
/// resumes its session (session present, same subscription, position from the log). Every
/// message the publisher got acknowledged reaches the subscriber — at QoS 2 exactly once.
#[test]
fn persistent_session_moves_to_the_surviving_adapter_after_kill_9() {
    let Some(python) = python() else {
        return;
    };
    let (urls, _dir) = stores();
    for url in urls.iter().take(2) {
        for qos in ["1", "2"] {
            let (pa, pb) = (free_port(), free_port());
            let mut a = start_adapter(url, pa);
            let mut b = start_adapter(url, pb);
            let topic = format!("move/q{qos}");
            let mut mover = Command::new(&python)
                .arg(python_script("mqtt_session_mover.py"))
                .args([&pa.to_string(), &pb.to_string(), &topic, qos, "4"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("mover");
            let got = collect_lines(&mut mover);
            let wait_for = |what: &str, n: usize| {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let have = got
                        .lock()
                        .expect("lines")
                        .iter()
                        .filter(|l| l.starts_with(what))
                        .count();
                    if have >= n {
                        return;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{url} q{qos}: waiting for {n} x {what:?}: {}",
                        tail(&got.lock().expect("lines"))
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            };
            wait_for("present 0", 1);
            wait_for("subscribed", 1);
            let mut publisher = Command::new(&python)
                .arg(python_script("mqtt_acked_publisher.py"))
                .args(["127.0.0.1", &pb.to_string(), &topic, "3000", qos, "0.002"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("publisher");
            let acked = collect_lines(&mut publisher);
            wait_for("got ", 300);
            wharf_tests::signal(a.id(), "KILL");
            let _ = a.wait();
            let st = publisher.wait().expect("publisher");
            assert!(st.success(), "{url} q{qos}: the publisher failed: {st}");
            let st = mover.wait().expect("mover");
            assert!(st.success(), "{url} q{qos}: the session mover failed: {st}");
            std::thread::sleep(Duration::from_millis(100));
            let got = got.lock().expect("lines").clone();
            let acked = acked.lock().expect("lines").clone();
            assert!(
                got.iter().any(|l| l == "moved"),
                "{url} q{qos}: {}",
                tail(&got)
            );
            assert!(
                got.iter().any(|l| l == "present 1"),
                "{url} q{qos}: B resumed the session: {}",
                tail(&got)
            );
            let received: Vec<&str> = got.iter().filter_map(|l| l.strip_prefix("got ")).collect();
            let set: std::collections::HashSet<&str> = received.iter().copied().collect();
            let lost: Vec<&str> = acked
                .iter()
                .filter_map(|l| l.strip_prefix("acked "))
                .filter(|p| !set.contains(p))
                .collect();
            assert!(
                acked.len() >= 1000,
                "{url} q{qos}: only {} acknowledged",
                acked.len()
            );
            assert!(
                lost.is_empty(),
                "{url} q{qos}: {} acknowledged but never delivered, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            );
            let duplicates = received.len() - set.len();
            if qos == "2" {
                assert_eq!(duplicates, 0, "{url}: QoS 2 delivered some twice");
            }
            let _ = b.kill();
            let _ = b.wait();
            eprintln!(
                "{url} QoS {qos}: {} acknowledged, {} delivered ({} duplicates) across kill -9 of the subscriber's adapter",
                acked.len(),
                received.len(),
                duplicates
            );
        }
    }
}

/// Credentials, TLS and WebSocket on one adapter: a users file with an argon2 hash made by
/// `wharf user hash`; anonymous clients refused (settings `anonymous = "deny"`, and by default
/// on a listener not bound to loopback); mosquitto over TLS (8883-style listener) with the
/// server's certificate; Paho over WebSocket on /mqtt.
#[test]
fn credentials_tls_and_websocket() {
    if !have("mosquitto_pub") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let hash = wharf_tests::user_hash("s3cret");
    std::fs::write(
        path("users.toml"),
        format!("[[user]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n"),
    )
    .expect("users");
    std::fs::write(path("deny.toml"), "[auth]\nanonymous = \"deny\"\n").expect("settings");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    std::fs::write(path("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).expect("key");

    let store = format!("file://{}", path("data").display());
    let (plain, tls, ws) = (free_port(), free_port(), free_port());
    let mut adapter = wharf_tests::KillOnDrop(
        wharf(&store)
            .arg("--config")
            .arg(path("deny.toml"))
            .args([
                "adapter",
                "--amqp",
                "off",
                "--mqtt",
                &format!("127.0.0.1:{plain}"),
            ])
            .args(["--mqtts", &format!("127.0.0.1:{tls}")])
            .args(["--mqtt-ws", &format!("127.0.0.1:{ws}")])
            .arg("--tls-cert")
            .arg(path("cert.pem"))
            .arg("--tls-key")
            .arg(path("key.pem"))
            .arg("--users")
            .arg(path("users.toml"))
            .stdout(Stdio::null())
            .spawn()
            .expect("adapter"),
    );
    wharf_tests::wait_for_port(ws);
    let publish = |port: u16, extra: &[&str]| {
        mosquitto("mosquitto_pub", port)
            .args(["-t", "secure/t", "-m", "hello", "-q", "1"])
            .args(extra)
            .output()
            .expect("mosquitto_pub")
    };
    let anonymous = publish(plain, &[]);
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("not authorised"),
        "{anonymous:?}"
    );
    let wrong = publish(plain, &["-u", "dev", "-P", "wrong"]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("bad user name or password"),
        "{wrong:?}"
    );
    assert!(
        publish(plain, &["-u", "dev", "-P", "s3cret"])
            .status
            .success()
    );
    let cafile = path("cert.pem");
    let over_tls = publish(
        tls,
        &[
            "-u",
            "dev",
            "-P",
            "s3cret",
            "--cafile",
            &cafile.to_string_lossy(),
        ],
    );
    assert!(over_tls.status.success(), "{over_tls:?}");
    let out = Command::new(&python)
        .arg(python_script("mqtt_ws_roundtrip.py"))
        .args([&ws.to_string(), "dev", "s3cret"])
        .output()
        .expect("paho over websocket");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ws ok 100000"),
        "{out:?}"
    );
    let _ = adapter.kill();

    // Default rule: anonymous clients only on listeners bound to loopback.
    let public = free_port();
    let _open = wharf_tests::KillOnDrop(
        wharf(&store)
            .args([
                "adapter",
                "--amqp",
                "off",
                "--mqtt",
                &format!("0.0.0.0:{public}"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("adapter"),
    );
    wharf_tests::wait_for_port(public);
    let refused = publish(public, &[]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not authorised"),
        "{refused:?}"
    );
    eprintln!("credentials, TLS and WebSocket: as expected");
}

/// Two adapters on one store share one port (SO_REUSEPORT, `--reuse-port`): the kernel
/// spreads publishers over both; a subscriber on a third adapter gets every publish
/// whichever adapter took it; after `kill -9` of one, the shared port keeps serving.
#[test]
fn adapters_share_a_port_with_reuse_port() {
    if !have("mosquitto_pub") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().display());
    let port = free_port();
    let start = || {
        wharf_tests::KillOnDrop(
            wharf(&store)
                .args([
                    "adapter",
                    "--reuse-port",
                    "--amqp",
                    "off",
                    "--mqtt",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("adapter"),
        )
    };
    let mut a = start();
    let mut b = start();
    wharf_tests::wait_for_port(port);
    std::thread::sleep(Duration::from_millis(300)); // both bound
    assert!(a.try_wait().expect("status").is_none(), "A shares the port");
    assert!(b.try_wait().expect("status").is_none(), "B shares the port");
    let c_port = free_port();
    let _c = start_adapter(&store, c_port);
    let mut cmd = mosquitto("mosquitto_sub", c_port);
    cmd.args(["-t", "shared/port", "-q", "1", "-C", "20", "-W", "30"]);
    let sub = wharf_tests::Subscriber::start(cmd);
    for i in 0..20 {
        if i == 10 {
            wharf_tests::signal(a.id(), "KILL");
            let _ = a.wait();
        }
        // Right after the kill a connection may still land in the dead socket's queue.
        let ok = (0..5).any(|_| {
            mosquitto("mosquitto_pub", port)
                .args(["-t", "shared/port", "-q", "1", "-m", &format!("m{i}")])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ok, "publish m{i} on the shared port");
    }
    let (status, got) = sub.wait();
    assert!(status.success(), "{status:?} {got:?}");
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

/// The wills of a dead adapter's clients are published by another adapter: a client with a
/// will (mosquitto_sub --will-*) on adapter A, a watcher subscribed on adapter B; `kill -9` of
/// A; B notices A's lease expired and publishes the will. A clean disconnect's will is not.
#[test]
fn wills_of_a_dead_adapters_clients_are_published_by_another() {
    if !have("mosquitto_sub") {
        return;
    }
    let (urls, dir) = stores();
    let settings = dir.path().join("lease.toml");
    std::fs::write(
        &settings,
        "[mqtt]\nadapter_lease = \"2s\"\nshare_block = 16\n",
    )
    .expect("settings");
    for url in urls.iter().take(2) {
        let start = |port: u16| wharf_tests::start_adapter_with_config(url, port, &settings);
        let (pa, pb) = (free_port(), free_port());
        let mut a = start(pa);
        let _b = start(pb);
        let watcher = mosquitto("mosquitto_sub", pb)
            .args(["-t", "status/#", "-q", "1", "-v", "-C", "1", "-W", "30"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("watcher");
        // A client that leaves cleanly: its will must never appear.
        let clean = mosquitto("mosquitto_sub", pa)
            .args(["-t", "x", "-i", "clean-dev", "-C", "1", "-W", "1"])
            .args([
                "--will-topic",
                "status/clean-dev",
                "--will-payload",
                "never",
            ])
            .output()
            .expect("clean client");
        assert!(
            !clean.status.success(),
            "it timed out and disconnected cleanly"
        );
        let _device = device_with_will(url, "default", pa, "dev-1", &[]);
        wharf_tests::signal(a.id(), "KILL");
        let _ = a.wait();
        let started = std::time::Instant::now();
        let out = watcher.wait_with_output().expect("watcher");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "status/dev-1 offline",
            "{url}: the will of A's client, published by B"
        );
        eprintln!(
            "{url}: will published by the surviving adapter {:.1} s after kill -9",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Shared subscriptions `$share/group/filter`: with Paho, each message goes to exactly one
/// member, members on both adapters get messages (a member on B that never acknowledges
/// holds at most two blocks; A's members get all the rest meanwhile), and a member that leaves
/// with unacknowledged messages has them redelivered to the others; with mosquitto clients,
/// when an adapter holding the group's blocks is killed, a member on another adapter gets
/// them.
#[test]
fn shared_subscriptions_across_adapters() {
    if !have("mosquitto_sub") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let (urls, dir) = stores();
    let settings = dir.path().join("share.toml");
    std::fs::write(
        &settings,
        "[mqtt]\nadapter_lease = \"2s\"\nshare_block = 16\n",
    )
    .expect("settings");
    for url in urls.iter().take(2) {
        let start = |port: u16| wharf_tests::start_adapter_with_config(url, port, &settings);
        let (pa, pb) = (free_port(), free_port());
        let mut a = start(pa);
        let _b = start(pb);
        let out = Command::new(&python)
            .arg(python_script("mqtt_shared_check.py"))
            .args([&pa.to_string(), &pb.to_string(), "200", "16"])
            .output()
            .expect("paho");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{url}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{url}: {}", text.trim());

        // Failover: only A has a member while o0..o9 are published, so A holds the block
        // being written; then a member joins on B and A is killed: B takes A's blocks once
        // their leases (2 s) expire and delivers o10..o19.
        let member = |port: u16| {
            let mut cmd = mosquitto("mosquitto_sub", port);
            cmd.args(["-t", "$share/fo/orders/+", "-q", "1", "-c", "-i"])
                .arg(format!("fo-{port}"));
            wharf_tests::Subscriber::start(cmd)
        };
        let on_a = member(pa);
        let publish = |i: usize| {
            let st = mosquitto("mosquitto_pub", pb)
                .args(["-t", "orders/x", "-q", "1", "-m", &format!("o{i}")])
                .status()
                .expect("pub");
            assert!(st.success());
        };
        for i in 0..10 {
            publish(i);
        }
        let on_b = member(pb);
        wharf_tests::signal(a.id(), "KILL");
        let _ = a.wait();
        for i in 10..20 {
            publish(i);
        }
        // B takes A's blocks once their leases (2 s) have expired: wait for every order (or
        // 30 s), then a moment for anything more to show.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let all: std::collections::HashSet<String> =
                on_a.lines().into_iter().chain(on_b.lines()).collect();
            if all.len() >= 20 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let (got_a, got_b) = (on_a.stop(), on_b.stop());
        let all: std::collections::HashSet<&String> = got_a.iter().chain(&got_b).collect();
        for i in 10..20 {
            assert!(
                got_b.contains(&format!("o{i}")),
                "{url}: o{i} after the kill reached the member on B: A {got_a:?} B {got_b:?}"
            );
        }
        assert_eq!(
            all.len(),
            20,
            "{url}: every order delivered: A {got_a:?} B {got_b:?}"
        );
        eprintln!(
            "{url}: failover: A's member got {}, B's member got {} (after kill -9 of A)",
            got_a.len(),
            got_b.len()
        );
    }
}

/// rumqttc (a third-party Rust client) against the real binary: a persistent-session
/// subscriber at QoS 2 gets 50 QoS 2 publishes exactly once, and after reconnecting (session
/// present) the ones published while it was away.
#[test]
fn rumqttc_qos2_and_persistent_session() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let port = free_port();
    let _adapter = start_adapter(&url, port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let client = |id: &str, clean: bool| {
            let mut o = MqttOptions::new(id, "127.0.0.1", port);
            o.set_clean_session(clean);
            o.set_keep_alive(Duration::from_secs(10));
            AsyncClient::new(o, 100)
        };
        // Drive an event loop until `n` publishes arrived (or 10 s pass); returns their payloads
        // and whether CONNACK said session present.
        async fn collect(events: &mut rumqttc::EventLoop, n: usize) -> (Vec<String>, Option<bool>) {
            let mut got = Vec::new();
            let mut present = None;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while got.len() < n {
                match tokio::time::timeout_at(deadline, events.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => {
                        present = Some(a.session_present)
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        got.push(String::from_utf8_lossy(&p.payload).into_owned())
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("rumqttc: {e}"),
                    Err(_) => break,
                }
            }
            (got, present)
        }
        let (sub, mut sub_events) = client("rq-sub", false);
        sub.subscribe("rq/#", QoS::ExactlyOnce)
            .await
            .expect("subscribe");
        let (pubr, mut pub_events) = client("rq-pub", true);
        let publisher = tokio::spawn(async move {
            loop {
                if pub_events.poll().await.is_err() {
                    return;
                }
            }
        });
        // Let the subscription land before publishing.
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) =
                    sub_events.poll().await.expect("subscriber")
                {
                    break;
                }
            }
        })
        .await
        .expect("no SUBACK within 15 s");
        for i in 0..50 {
            pubr.publish("rq/a", QoS::ExactlyOnce, false, format!("q{i}"))
                .await
                .expect("publish");
        }
        let (got, _) = collect(&mut sub_events, 50).await;
        let want: Vec<String> = (0..50).map(|i| format!("q{i}")).collect();
        assert_eq!(got, want, "QoS 2: each once, in order");
        // Finish the QoS 2 exchanges (PUBREL -> PUBCOMP) before leaving: a new rumqttc client
        // has no memory of them, and errors on a PUBREL it does not know (the spec wants a
        // PUBCOMP) — which a resumed session sends for releases that were not completed.
        // (Packet ids come from the offsets: the last message, offset 49, is packet 50.)
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let Event::Outgoing(rumqttc::Outgoing::PubComp(50)) =
                    sub_events.poll().await.expect("subscriber")
                {
                    break;
                }
            }
        })
        .await
        .expect("the last PUBCOMP was not sent within 15 s");
        // Away: disconnect, publish 5, come back.
        sub.disconnect().await.expect("disconnect");
        // Until the DISCONNECT is out (poll returns an error once the connection is closed).
        tokio::time::timeout(Duration::from_secs(15), async {
            while sub_events.poll().await.is_ok() {}
        })
        .await
        .expect("the connection did not close within 15 s of DISCONNECT");
        drop(sub_events);
        for i in 50..55 {
            pubr.publish("rq/b", QoS::AtLeastOnce, false, format!("q{i}"))
                .await
                .expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_sub2, mut events2) = client("rq-sub", false);
        let (got, present) = collect(&mut events2, 5).await;
        assert_eq!(present, Some(true), "session present");
        let want: Vec<String> = (50..55).map(|i| format!("q{i}")).collect();
        assert_eq!(got, want, "queued while away, delivered on return");
        publisher.abort();
    });
}

/// SIGTERM (what Kubernetes sends) ends an adapter cleanly: MQTT 5 clients get DISCONNECT
/// 0x8B (server shutting down) and the process exits with success.
#[test]
fn sigterm_disconnects_mqtt5_clients_with_server_shutting_down() {
    if !have("mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let port = free_port();
    let mut adapter = start_adapter(&url, port);
    // Returns once subscribed (no sleep): the connection is established and served.
    let mut cmd = mosquitto("mosquitto_sub", port);
    cmd.args(["-V", "mqttv5", "-t", "a", "-W", "10"]);
    let sub = wharf_tests::Subscriber::start(cmd);
    wharf_tests::signal(adapter.id(), "TERM");
    let status = adapter.wait().expect("adapter");
    assert!(status.success(), "{status:?}");
    let (_, lines, debug) = sub.wait_all();
    assert!(
        lines
            .iter()
            .chain(&debug)
            .any(|l| l.contains("eceived DISCONNECT (139)")),
        "{lines:?} {debug:?}"
    );
}

/// Addresses declared with `mqtt_topics` claim those topics: publishes are stored in their
/// streams, MQTT subscribers on any adapter follow them, AMQP clients share them, and a
/// persistent session's position in them moves with it (Paho + Qpid Proton, two adapters).
#[test]
fn configured_addresses_claim_mqtt_topics() {
    let Some(py) = python() else { return };
    let (urls, dir) = stores();
    let addresses = dir.path().join("addresses.json");
    std::fs::write(
        &addresses,
        r#"[
  {"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "sensors"},
   "spec": {"type": "topic", "mqtt_topics": ["sensors/#"]}},
  {"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "jobs"},
   "spec": {"type": "queue", "mqtt_topics": ["jobs/+"]}}
]"#,
    )
    .expect("addresses");
    let overlapping = dir.path().join("overlapping.json");
    std::fs::write(
        &overlapping,
        r#"{"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "rooms"},
            "spec": {"type": "topic", "mqtt_topics": ["sensors/r9"]}}"#,
    )
    .expect("overlapping");
    for url in urls {
        let (ma, aa, mb) = (free_port(), free_port(), free_port());
        // A declares the addresses at start-up; B finds them in the catalog.
        let mut a = wharf_tests::KillOnDrop(
            wharf(&url)
                .args(["adapter", "--addresses"])
                .arg(&addresses)
                .args(["--mqtt", &format!("127.0.0.1:{ma}")])
                .args(["--amqp", &format!("127.0.0.1:{aa}")])
                .stdout(Stdio::null())
                .spawn()
                .expect("adapter A"),
        );
        wharf_tests::wait_for_port(ma);
        wharf_tests::wait_for_port(aa);
        let mut b = start_adapter(&url, mb);
        let out = Command::new(&py)
            .arg(python_script("mqtt_claims.py"))
            .args([ma.to_string(), aa.to_string(), mb.to_string()])
            .output()
            .expect("mqtt_claims.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{url}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            8,
            "{url}: {stdout}"
        );
        // Where each publish was stored.
        let keys = |stream: &str| -> Vec<String> {
            let dump = wharf(&url).args(["dump", stream]).output().expect("dump");
            json_lines(&String::from_utf8_lossy(&dump.stdout))
                .iter()
                .filter_map(|r| r["key"].as_str().map(str::to_string))
                .collect()
        };
        let default = keys("mqtt-default");
        let shared_default = (0..20).step_by(2).map(|n| format!("other/{n}"));
        assert_eq!(
            default,
            std::iter::once("other/x".to_string())
                .chain(shared_default)
                .chain(["other/amqp".to_string()])
                .collect::<Vec<_>>(),
            "{url}: only unclaimed topics in mqtt-default"
        );
        assert_eq!(keys("jobs"), ["jobs/1", "jobs/2"], "{url}");
        // MQTT publishes, the AMQP send to /topic/sensors/r2/temp, the mover's 1 + 3, the
        // shared subscription's 10, the one for /topic/#.
        let shared_sensors = (1..20).step_by(2).map(|n| format!("sensors/s{n}/temp"));
        assert_eq!(
            keys("sensors"),
            [
                "sensors/r1/temp",
                "sensors/r1/humidity",
                "sensors/r3/temp",
                "sensors/r2/temp",
                "sensors/r1/temp",
                "sensors/r0/temp",
                "sensors/r1/temp",
                "sensors/r2/temp"
            ]
            .into_iter()
            .map(str::to_string)
            .chain(shared_sensors)
            .chain(["sensors/amqp/temp".to_string()])
            .collect::<Vec<_>>(),
            "{url}"
        );
        // A claim overlapping a declared one is refused, naming both addresses.
        let refused = wharf(&url)
            .args(["address", "apply", "--file"])
            .arg(&overlapping)
            .output()
            .expect("address apply");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{url}: overlap accepted");
        assert!(
            err.contains("spec.mqtt_topics") && err.contains("rooms") && err.contains("sensors"),
            "{err}"
        );
        let _ = (a.kill(), b.kill());
        let _ = (a.wait(), b.wait());
        eprintln!("{url}: {}", stdout.trim().replace('\n', "; "));
    }
}

/// Tenants are isolated: a users file puts `alice` in `acme` and `bob` in `globex`; both
/// tenants declare an address `orders` claiming `orders/#` (one `wharf address apply`, routed by
/// `metadata.tenant`). Against two adapters with MQTT and AMQP (Paho, Qpid Proton): the same
/// client id in three tenants, publishes, retained messages and a persistent session each stay
/// in their tenant (tests/python/tenants_isolated.py); the store holds each tenant's log under
/// its prefix, and `--tenant` shows it. After `kill -9` of one adapter, the other publishes
/// the will of a tenant's client there, in that tenant only (mosquitto clients).
#[test]
fn tenants_are_isolated_across_adapters() {
    let Some(python) = python() else {
        return;
    };
    if !have("mosquitto_sub") {
        return;
    }
    let (urls, dir) = stores();
    let settings = dir.path().join("lease.toml");
    std::fs::write(&settings, "[mqtt]\nadapter_lease = \"2s\"\n").expect("settings");
    let hash = wharf_tests::user_hash("pw");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntenant = \"acme\"\n\
             [[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\ntenant = \"globex\"\n"
        ),
    )
    .expect("users file");
    let addresses = dir.path().join("orders.json");
    std::fs::write(
        &addresses,
        r#"[{"apiVersion": "wharf/v1", "kind": "Address",
             "metadata": {"name": "orders", "tenant": "acme"},
             "spec": {"type": "topic", "mqtt_topics": ["orders/#"]}},
            {"apiVersion": "wharf/v1", "kind": "Address",
             "metadata": {"name": "orders", "tenant": "globex"},
             "spec": {"type": "topic", "mqtt_topics": ["orders/#"]}}]"#,
    )
    .expect("address file");
    for url in &urls {
        let applied = wharf(url)
            .args(["address", "apply", "--file"])
            .arg(&addresses)
            .output()
            .expect("address apply");
        assert!(applied.status.success(), "{url}: {applied:?}");
        assert_eq!(
            String::from_utf8_lossy(&applied.stdout)
                .lines()
                .collect::<Vec<_>>(),
            [
                "address/orders applied in tenant acme (revision 1)",
                "address/orders applied in tenant globex (revision 1)"
            ]
        );
        let adapter = |mqtt: u16, amqp: u16| {
            let child = wharf(url)
                .arg("--config")
                .arg(&settings)
                .args(["adapter", "--mqtt", &format!("127.0.0.1:{mqtt}")])
                .args(["--amqp", &format!("127.0.0.1:{amqp}"), "--users"])
                .arg(&users)
                .stdout(Stdio::null())
                .spawn()
                .expect("adapter");
            wharf_tests::wait_for_port(mqtt);
            wharf_tests::wait_for_port(amqp);
            wharf_tests::KillOnDrop(child)
        };
        let (mqtt_a, amqp_a, mqtt_b, amqp_b) = (free_port(), free_port(), free_port(), free_port());
        let mut a = adapter(mqtt_a, amqp_a);
        let _b = adapter(mqtt_b, amqp_b);
        let out = Command::new(&python)
            .arg(python_script("tenants_isolated.py"))
            .args([mqtt_a, amqp_a, mqtt_b, amqp_b].map(|p| p.to_string()))
            .output()
            .expect("tenants_isolated.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.matches("ok ").count() == 4,
            "{url}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli = |args: &[&str]| {
            let out = wharf(url).args(args).output().expect("wharf");
            assert!(out.status.success(), "{url}: wharf {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(
            cli(&["tenants"]).lines().collect::<Vec<_>>(),
            ["default", "acme", "globex"]
        );
        let keys = |tenant: &str, stream: &str| -> Vec<String> {
            json_lines(&cli(&["--tenant", tenant, "dump", stream]))
                .iter()
                .filter_map(|r| r["key"].as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(keys("acme", "orders"), ["orders/1"], "{url}");
        assert_eq!(keys("globex", "orders"), ["orders/2"], "{url}");
        assert_eq!(
            keys("acme", "mqtt-default"),
            ["sensors/t", "sensors/t"],
            "{url}: acme-1, acme-2"
        );
        assert_eq!(keys("default", "mqtt-default"), ["sensors/t"], "{url}");
        assert!(
            cli(&["address", "list"]).is_empty(),
            "{url}: the default tenant declared no address"
        );
        assert!(cli(&["--tenant", "acme", "address", "list"]).contains("orders/#"));

        // Wills: alice's device on A dies with A; B publishes its will in acme only.
        let watch = |user: &str, wait: &str| {
            mosquitto("mosquitto_sub", mqtt_b)
                .args(["-u", user, "-P", "pw", "-t", "status/#", "-q", "1", "-v"])
                .args(["-C", "1", "-W", wait])
                .stdout(Stdio::piped())
                .spawn()
                .expect("watcher")
        };
        let (alice_watch, bob_watch) = (watch("alice", "30"), watch("bob", "12"));
        let _device = device_with_will(url, "acme", mqtt_a, "dev", &["-u", "alice", "-P", "pw"]);
        wharf_tests::signal(a.id(), "KILL");
        let _ = a.wait();
        let alice_got = alice_watch.wait_with_output().expect("watcher");
        assert_eq!(
            String::from_utf8_lossy(&alice_got.stdout).trim(),
            "status/dev offline",
            "{url}: the will of acme's client on A, published by B"
        );
        let bob_got = bob_watch.wait_with_output().expect("watcher");
        assert!(
            bob_got.stdout.is_empty(),
            "{url}: globex saw acme's will: {bob_got:?}"
        );
        eprintln!("{url}: tenants isolated");
    }
}

/// Two adapters on each store; `script` (tests/python) gets both ports, A's pid and `args`,
/// sends A SIGTERM itself and must print `ok`; A must then exit with success.
fn sigterm_check(script: &str, args: &[&str], ok: &str, settings: Option<&std::path::Path>) {
    let Some(python) = python() else {
        return;
    };
    let (urls, _dir) = stores();
    for url in urls.iter().take(2) {
        let start = |port: u16| match settings {
            Some(s) => wharf_tests::start_adapter_with_config(url, port, s),
            None => start_adapter(url, port),
        };
        let (pa, pb) = (free_port(), free_port());
        let mut a = start(pa);
        let _b = start(pb);
        let mut check = Command::new(&python);
        check
            .arg(python_script(script))
            .args([&pa.to_string(), &pb.to_string(), &a.id().to_string()])
            .args(args);
        let out = run_checked(check, script);
        assert!(out.contains(ok), "{url}: {out}");
        let status = a.wait().expect("adapter A exits");
        assert!(status.success(), "{url}: adapter A exited with {status}");
        eprintln!("{url}: {}", out.lines().next().unwrap_or_default());
    }
}

/// Shutdown order (`adapters/core/src/runtime.rs`): an adapter stopped with SIGTERM ends its
/// connections, and their shared groups commit and release their blocks before it exits, so
/// another adapter's member gets what the stopped adapter's member held unacknowledged at once
/// — not after the blocks' leases (60 s here) expire (tests/python/mqtt_shared_sigterm.py).
/// Fails (taker served after 60 s) when a group that stops serving drops its blocks without
/// releasing them.
#[test]
fn sigterm_hands_shared_subscription_blocks_over_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("share.toml");
    std::fs::write(&settings, "[mqtt]\nadapter_lease = \"60s\"\n").expect("settings");
    sigterm_check(
        "mqtt_shared_sigterm.py",
        &["20", "60"],
        "ok shared subscription handed over at shutdown",
        Some(&settings),
    );
}

/// SIGTERM keeps MQTT's promises: the disconnected client's will is published and its
/// persistent session's position saved, so it resumes on another adapter with m5..m9 and
/// none of the m0..m4 it had acknowledged (tests/python/mqtt_sigterm_session.py, paho).
#[test]
fn sigterm_publishes_wills_and_saves_session_positions() {
    sigterm_check(
        "mqtt_sigterm_session.py",
        &[],
        "ok sigterm kept the will and the session position",
        None,
    );
}

/// Back-pressure: a client publishing faster than the store takes its messages waits (its
/// TCP window fills) instead of growing the adapter's memory. The adapter's own S3 server is
/// stopped (SIGSTOP) so nothing becomes durable; a raw client then pushes small QoS 0
/// PUBLISHes (100 B of payload) without blocking. The adapter reads at most
/// `MAX_PENDING_RECORDS` (16,384) publishes being stored per connection (~2 MiB here), so the
/// client can hand over no more than that plus the sockets' buffers (a few MiB each). The
/// log's own budget (`[log] max_pending_bytes`, 32 MiB per tenant) is the second line: with
/// the per-connection limit removed by hand, the client handed over 29 MiB (5 MiB with it),
/// the adapter grew by 107 MiB (14 MiB) and this test failed. Then the store comes back and
/// the connection goes on (PINGRESP after the backlog).
#[test]
fn a_publisher_faster_than_the_store_is_held_back_not_buffered() {
    let Some((moto, url)) = wharf_tests::own_moto("backpressure") else {
        return;
    };
    let port = free_port();
    let adapter = start_adapter(&url, port);
    let rss_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // CONNECT (3.1.1, clean session, keep-alive 0, client id "bp").
    s.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 2, b'b', b'p',
    ])
    .expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    // QoS 0 PUBLISHes to "bp/t" with 100 B of payload, 640 of them back to back (64 KiB
    // written at a time; the stream is the same packet over and over).
    let mut packet = vec![0x30, 106, 0, 4];
    packet.extend(b"bp/t");
    packet.extend([b'x'; 100]);
    let publish = packet.repeat(640);

    let before = rss_kib(adapter.id());
    wharf_tests::signal(moto.id(), "STOP");
    s.set_nonblocking(true).expect("nonblocking");
    let limit: usize = 300 << 20; // what the client tries to send
    let mut written = 0usize;
    let mut offset = 0usize;
    let mut last_progress = std::time::Instant::now();
    let started = std::time::Instant::now();
    while written < limit
        && last_progress.elapsed() < Duration::from_secs(3)
        && started.elapsed() < Duration::from_secs(60)
    {
        match s.write(&publish[offset..]) {
            Ok(n) => {
                written += n;
                offset = (offset + n) % publish.len();
                last_progress = std::time::Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let grown = rss_kib(adapter.id()).saturating_sub(before);
    wharf_tests::signal(moto.id(), "CONT");
    eprintln!(
        "back-pressure: the client handed over {} MiB of {} MiB in {:.1} s; adapter memory grew {} MiB",
        written >> 20,
        limit >> 20,
        started.elapsed().as_secs_f64(),
        grown >> 10
    );
    // 16,384 publishes of 108 B being stored, plus both sockets' buffers (a few MiB each);
    // without the per-connection limit, the log's 32 MiB budget and the same buffers.
    assert!(
        written < 24 << 20,
        "the adapter kept reading while nothing was stored: {} MiB taken",
        written >> 20
    );
    assert!(
        grown < 128 << 10,
        "the adapter's memory grew by {} MiB while the store was stopped",
        grown >> 10
    );
    // The store is back: the backlog is stored and the connection goes on.
    s.set_nonblocking(false).expect("blocking");
    s.set_write_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    s.write_all(&publish[offset..]).expect("finish the packet");
    s.write_all(&[0xC0, 0]).expect("PINGREQ");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).expect("PINGRESP after the backlog");
    assert_eq!(pong, [0xD0, 0]);
}
