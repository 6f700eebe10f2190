//! The AMQP 1.0 adapter with third-party clients against the real binary: Qpid Proton
//! (python-qpid-proton) and rhea (npm) scenarios, two adapters on one store with a `kill -9`,
//! and bad input on the wire.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use wharf_tests::{
    free_port, node_script, ok_lines, python, python_script, run_checked, start_amqp_adapter,
    stores, wharf,
};

/// A users file with alice / secret (hashed by `wharf user hash`).
fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    let hash = wharf_tests::user_hash("secret");
    let path = dir.join("users.toml");
    std::fs::write(
        &path,
        format!("[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"),
    )
    .expect("users file");
    path
}

#[test]
fn qpid_proton_and_rhea_scenarios() {
    let Some(py) = python() else { return };
    let (urls, dir) = stores();
    let users = users_file(dir.path());
    let strict_config = dir.path().join("strict.toml");
    std::fs::write(
        &strict_config,
        "[amqp]\nauto_create = false\nmax_message_size = 65536\n",
    )
    .expect("config");
    let declared = dir.path().join("addresses.json");
    std::fs::write(
        &declared,
        r#"[{"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "declared"}, "spec": {"type": "queue"}},
            {"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "orders"},
             "spec": {"type": "queue", "max_delivery": 2, "dead_letter": "orders.dlq"}},
            {"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "orders.dlq"}, "spec": {"type": "queue"}}]"#,
    )
    .expect("addresses");
    // The local filesystem and the first S3-compatible server (the others add time, not cover).
    for url in urls.iter().take(2) {
        let port = free_port();
        let users_arg = users.to_string_lossy().to_string();
        let _main = start_amqp_adapter(url, port, None, &["--users", &users_arg]);
        let strict_port = free_port();
        let strict_store = format!("{url}-strict");
        let strict_store = if url.starts_with("file://") {
            strict_store
        } else {
            url.replace("wharf-test", "wharf-test/strict")
        };
        let declared_arg = declared.to_string_lossy().to_string();
        let _strict = start_amqp_adapter(
            &strict_store,
            strict_port,
            Some(&strict_config),
            &["--addresses", &declared_arg],
        );
        let mut proton = Command::new(&py);
        proton.arg(python_script("amqp_proton_scenarios.py")).args([
            &port.to_string(),
            "alice",
            "secret",
            &strict_port.to_string(),
        ]);
        let out = run_checked(proton, "Qpid Proton scenarios");
        assert!(out.contains("all passed"), "{url}: {out}");
        assert_eq!(ok_lines(&out), 14, "{out}");
        if url.starts_with("file://")
            && let Some(mut rhea) = node_script("rhea_scenarios.js")
        {
            rhea.args([&port.to_string(), "alice", "secret"]);
            let out = run_checked(rhea, "rhea scenarios");
            assert!(out.contains("all passed"), "{out}");
            assert_eq!(ok_lines(&out), 7, "{out}");
        }
    }
}

#[test]
fn queue_shared_by_two_adapters_survives_kill_9_of_one() {
    let Some(py) = python() else { return };
    let (urls, dir) = stores();
    let config = dir.path().join("lease.toml");
    // Small blocks: 3,000 messages span several, so both adapters serve some.
    std::fs::write(&config, "[amqp]\nqueue_lease = \"2s\"\nqueue_block = 512\n").expect("config");
    for url in urls.iter().take(2) {
        let (pa, pb) = (free_port(), free_port());
        let a = start_amqp_adapter(url, pa, Some(&config), &[]);
        let _b = start_amqp_adapter(url, pb, Some(&config), &[]);
        let mut check = Command::new(&py);
        check.arg(python_script("amqp_queue_failover.py")).args([
            &pa.to_string(),
            &pb.to_string(),
            &a.id().to_string(),
            "3000",
        ]);
        let out = run_checked(check, "queue failover");
        assert!(out.contains("ok queue failover"), "{url}: {out}");
        eprintln!("{url}: {}", out.lines().next().unwrap_or_default());
    }
}

/// A shared durable subscription's start is the same for every adapter: the adapter that
/// started it is killed before acknowledging anything, and a receiver on the other adapter
/// gets everything sent since (tests/python/amqp_shared_failover.py).
#[test]
fn shared_subscription_survives_kill_9_of_the_adapter_that_started_it() {
    let Some(py) = python() else { return };
    let (urls, dir) = stores();
    let config = dir.path().join("lease.toml");
    std::fs::write(&config, "[amqp]\nqueue_lease = \"2s\"\n").expect("config");
    for url in urls.iter().take(2) {
        let (pa, pb) = (free_port(), free_port());
        let a = start_amqp_adapter(url, pa, Some(&config), &[]);
        let _b = start_amqp_adapter(url, pb, Some(&config), &[]);
        let mut check = Command::new(&py);
        check.arg(python_script("amqp_shared_failover.py")).args([
            &pa.to_string(),
            &pb.to_string(),
            &a.id().to_string(),
        ]);
        let out = run_checked(check, "shared subscription failover");
        assert!(
            out.contains("ok shared subscription failover"),
            "{url}: {out}"
        );
        eprintln!("{url}: {}", out.trim());
    }
}

/// Read until the peer closes the socket; a peer that has not closed it within 5 s fails the
/// test (a reset counts as closed: the server may close with our unread bytes pending).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the server did not close the socket within 5 s; read so far: {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            // Reset or the like: closed.
            Err(_) => return got,
        }
    }
}

#[test]
fn bad_input_gets_a_protocol_answer_and_the_adapter_lives_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let port = free_port();
    let _adapter = start_amqp_adapter(&url, port, None, &[]);
    // Not AMQP at all: our protocol header back, then the socket closes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    assert_eq!(read_to_close(&mut s), b"AMQP\x00\x01\x00\x00");
    // AMQP 0-9-1: same.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"AMQP\x00\x00\x09\x01").expect("write");
    assert_eq!(read_to_close(&mut s), b"AMQP\x00\x01\x00\x00");
    // A frame larger than our max-frame-size: close with amqp:connection:framing-error.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"AMQP\x00\x01\x00\x00").expect("write");
    s.write_all(&[0x7f, 0, 0, 0, 2, 0, 0, 0]).expect("write");
    let got = read_to_close(&mut s);
    assert!(got.starts_with(b"AMQP\x00\x01\x00\x00"), "{got:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("amqp:connection:framing-error"), "{text}");
    // Garbage where the open should be: amqp:decode-error.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"AMQP\x00\x01\x00\x00").expect("write");
    s.write_all(&[0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xff])
        .expect("write");
    let text = String::from_utf8_lossy(&read_to_close(&mut s)).to_string();
    assert!(text.contains("amqp:decode-error"), "{text}");
    // Still serving.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"AMQP\x03\x01\x00\x00").expect("write");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut header = [0u8; 8];
    s.read_exact(&mut header).expect("SASL header");
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
}

/// Proton over TLS with SASL PLAIN, where anonymous access is denied.
const TLS_CLIENT: &str = r#"
import sys
from proton import Message, SSLDomain, ConnectionException
from proton.utils import BlockingConnection
tls_port, plain_port, ca = sys.argv[1], sys.argv[2], sys.argv[3]
domain = SSLDomain(SSLDomain.MODE_CLIENT)
domain.set_trusted_ca_db(ca)
domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
# Proton checks the name against DNS names only: connect by "localhost".
c = BlockingConnection(f"amqps://localhost:{tls_port}", ssl_domain=domain, timeout=15,
                       user="alice", password="secret", allowed_mechs="PLAIN")
c.create_sender("secure").send(Message(body="over tls"))
r = c.create_receiver("secure", credit=1)
assert r.receive(timeout=10).body == "over tls"
r.accept()
c.close()
print("ok tls")
for kw in ({"sasl_enabled": False}, {"allowed_mechs": "ANONYMOUS"}):
    try:
        BlockingConnection(f"amqp://127.0.0.1:{plain_port}", timeout=10, **kw)
        raise AssertionError(f"anonymous accepted with {kw}")
    except ConnectionException:
        pass
print("ok anonymous refused")
"#;

#[test]
fn tls_listener_with_credentials_and_anonymous_denied() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| dir.path().join(n);
    let users = users_file(dir.path());
    std::fs::write(path("deny.toml"), "[auth]\nanonymous = \"deny\"\n").expect("settings");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    std::fs::write(path("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).expect("key");
    let (plain, tls) = (free_port(), free_port());
    let store = format!("file://{}", path("data").display());
    let p = |n: &str| path(n).to_string_lossy().to_string();
    let _adapter = start_amqp_adapter(
        &store,
        plain,
        Some(&path("deny.toml")),
        &[
            "--amqps",
            &format!("127.0.0.1:{tls}"),
            "--tls-cert",
            &p("cert.pem"),
            "--tls-key",
            &p("key.pem"),
            "--users",
            &users.to_string_lossy(),
        ],
    );
    wharf_tests::wait_for_port(tls);
    let mut check = Command::new(&py);
    check
        .args(["-c", TLS_CLIENT])
        .args([&tls.to_string(), &plain.to_string(), &p("cert.pem")]);
    let out = run_checked(check, "Proton over TLS");
    assert!(
        out.contains("ok tls") && out.contains("ok anonymous refused"),
        "{out}"
    );
}

#[test]
fn durable_subscription_resumes_on_another_adapter() {
    let Some(py) = python() else { return };
    let (urls, _dir) = stores();
    for url in urls.iter().take(2) {
        let (pa, pb) = (free_port(), free_port());
        let _a = start_amqp_adapter(url, pa, None, &[]);
        let _b = start_amqp_adapter(url, pb, None, &[]);
        let mut check = Command::new(&py);
        check
            .arg(python_script("amqp_durable_subscription.py"))
            .args([&pa.to_string(), &pb.to_string()]);
        let out = run_checked(check, "durable subscription");
        assert!(out.contains("ok durable subscription"), "{url}: {out}");
    }
}

#[test]
fn will_of_an_amqp_client_is_published_when_it_crashes() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let port = free_port();
    let _adapter = start_amqp_adapter(&url, port, None, &[]);
    let mut check = Command::new(&py);
    check
        .arg(python_script("amqp_will.py"))
        .arg(port.to_string());
    let out = run_checked(check, "AMQP will");
    assert!(out.contains("ok AMQP will"), "{out}");

    // The adapter dies with the client connected: another adapter publishes the will once the
    // dead one's lease expires.
    let config = dir.path().join("lease.toml");
    std::fs::write(&config, "[mqtt]\nadapter_lease = \"2s\"\n").expect("config");
    let shared = format!("file://{}", dir.path().join("shared").display());
    let (pa, pb) = (free_port(), free_port());
    let a = start_amqp_adapter(&shared, pa, Some(&config), &[]);
    let _b = start_amqp_adapter(&shared, pb, Some(&config), &[]);
    let mut check = Command::new(&py);
    check.arg(python_script("amqp_will.py")).args([
        &pa.to_string(),
        &pb.to_string(),
        &a.id().to_string(),
    ]);
    let out = run_checked(check, "AMQP will of a dead adapter");
    assert!(
        out.contains("ok AMQP will published by another adapter"),
        "{out}"
    );
    eprintln!("{}", out.trim());
}

#[test]
fn one_topic_serves_mqtt_and_amqp_clients() {
    let Some(py) = python() else { return };
    let (urls, _dir) = stores();
    for url in urls.iter().take(2) {
        let (mqtt, amqp) = (free_port(), free_port());
        let _adapter = wharf_tests::KillOnDrop(
            wharf(url)
                .args(["adapter", "--mqtt", &format!("127.0.0.1:{mqtt}")])
                .args(["--amqp", &format!("127.0.0.1:{amqp}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("adapter"),
        );
        wharf_tests::wait_for_port(mqtt);
        wharf_tests::wait_for_port(amqp);
        let mut check = Command::new(&py);
        check
            .arg(python_script("amqp_mqtt_bridge.py"))
            .args([&mqtt.to_string(), &amqp.to_string()]);
        let out = run_checked(check, "MQTT <-> AMQP");
        assert_eq!(ok_lines(&out), 3, "{url}: {out}");
    }
}

#[test]
fn shared_durable_subscription_links_compete() {
    let Some(py) = python() else { return };
    let (urls, _dir) = stores();
    let url = &urls[0];
    let (pa, pb) = (free_port(), free_port());
    let _a = start_amqp_adapter(url, pa, None, &[]);
    let _b = start_amqp_adapter(url, pb, None, &[]);
    let mut check = Command::new(&py);
    check
        .arg(python_script("amqp_shared_subscription.py"))
        .args([&pa.to_string(), &pb.to_string()]);
    let out = run_checked(check, "shared durable subscription");
    assert!(out.contains("ok shared durable subscription"), "{out}");
    eprintln!("{}", out.trim());
}

/// A changed Address spec reaches a running adapter: `jobs` first without a delivery limit,
/// then re-applied with `wharf address apply` (max_delivery 1, dead_letter `jobs.dlq`) while
/// the adapter and its queue run; after the catalog refresh the new limit and dead-letter
/// address apply (Qpid Proton, tests/python/amqp_spec_change.py).
#[test]
fn address_spec_changes_reach_a_running_adapter() {
    let Some(py) = python() else { return };
    let (urls, dir) = stores();
    let write = |name: &str, spec: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"[{{"apiVersion": "wharf/v1", "kind": "Address", "metadata": {{"name": "jobs"}},
                     "spec": {spec}}},
                    {{"apiVersion": "wharf/v1", "kind": "Address", "metadata": {{"name": "jobs.dlq"}},
                     "spec": {{"type": "queue"}}}}]"#
            ),
        )
        .expect("addresses");
        path
    };
    let before = write("before.json", r#"{"type": "queue"}"#);
    let after = write(
        "after.json",
        r#"{"type": "queue", "max_delivery": 1, "dead_letter": "jobs.dlq"}"#,
    );
    for url in urls.iter().take(2) {
        let port = free_port();
        let before_arg = before.to_string_lossy().to_string();
        let _adapter = start_amqp_adapter(url, port, None, &["--addresses", &before_arg]);
        let phase = |name: &str| {
            let mut cmd = Command::new(&py);
            cmd.arg(python_script("amqp_spec_change.py"))
                .args([&port.to_string(), name]);
            run_checked(cmd, name)
        };
        assert!(phase("before").contains("ok no delivery limit"), "{url}");
        let mut apply = wharf(url);
        apply.args(["address", "apply", "--file"]).arg(&after);
        run_checked(apply, "address apply");
        // Adapters read the catalog's Address changes every 2 s.
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            phase("after").contains("ok new max_delivery and dead_letter applied"),
            "{url}"
        );
    }
}

/// A store outage: the adapter's own S3-compatible server (moto, started here so killing it
/// disturbs no other test) is killed under it; a send the store did not take is *released*
/// to the Proton sender (send again), not rejected, and the adapter lives on
/// (tests/python/amqp_store_outage.py; the table is `adapters/core/src/errors.rs`).
#[test]
fn store_outage_releases_sends_and_the_adapter_lives_on() {
    let Some(py) = python() else { return };
    let Some((moto, url)) = wharf_tests::own_moto("outage") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("retries.toml");
    // Give up on the store after a few quick retries rather than the defaults' ~10 s.
    std::fs::write(&config, "[log]\nretry_attempts = 3\n").expect("config");
    let ap = free_port();
    let mut adapter = start_amqp_adapter(&url, ap, Some(&config), &[]);
    let mut check = Command::new(&py);
    check
        .arg(python_script("amqp_store_outage.py"))
        .args([&ap.to_string(), &moto.id().to_string()]);
    let out = run_checked(check, "store outage");
    assert!(out.contains("ok store outage: released"), "{out}");
    assert!(
        adapter.try_wait().expect("adapter status").is_none(),
        "the adapter exited during the outage"
    );
    eprintln!("{}", out.trim());
}
