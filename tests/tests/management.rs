//! The management API, metrics and live resources, end to end: the real `wharf` binary on the
//! local filesystem and on every configured S3-compatible server, driven by Python's urllib,
//! Paho (MQTT 5), Qpid Proton and `prometheus_client`'s OpenMetrics parser
//! (tests/python/api_live_access.py).

use std::process::{Command, Stdio};

use wharf_tests::{KillOnDrop, free_port, python, python_script, stores, wait_for_port, wharf};

/// Resources applied through the API take effect without a restart: a tenant, a user in it
/// with permissions and a topic address turn Ready; the user publishes with Paho and receives
/// with Proton; a permission removed is refused at the next publish (PUBACK 0x87) and attach
/// (`amqp:unauthorized-access`), and a subscriber whose receive permission goes is
/// disconnected (0x87) and a receiver detached; `/metrics` parses and its counters moved.
#[test]
fn resources_applied_through_the_api_take_effect_live() {
    let Some(python) = python() else {
        return;
    };
    let (urls, _dir) = stores();
    for url in &urls {
        let (http, mqtt, amqp) = (free_port(), free_port(), free_port());
        let child = wharf(url)
            .args(["up", "--admin-token", "t0ken"])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
            .args(["--amqp", &format!("127.0.0.1:{amqp}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn wharf up");
        let _up = KillOnDrop(child);
        wait_for_port(http);
        wait_for_port(mqtt);
        let out = Command::new(&python)
            .arg(python_script("api_live_access.py"))
            .args([http, mqtt, amqp].map(|p| p.to_string()))
            .arg("t0ken")
            .output()
            .expect("api_live_access.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.matches("ok ").count() == 5,
            "{url}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{url}:\n{stdout}");
    }
}
