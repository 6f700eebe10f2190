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
/// disconnected (0x87) and a receiver detached; `/metrics` parses and its counters moved;
/// the tenant's limits (message size, storage) refuse messages with 0x97 and AMQP rejections,
/// live; the tenant deleted, its clients are disconnected with a reason and new ones refused.
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
            out.status.success() && stdout.matches("ok ").count() == 8,
            "{url}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{url}:\n{stdout}");
    }
}

/// The kubectl-like CLI, against the API (`--server`) and on the store directly: `apply -f`
/// takes YAML documents of every kind (a User's plain password hashed), `get` prints a table
/// and `-o json`, `describe` shows the backlog of a queue, bad resources and unknown names
/// fail naming the field.
#[test]
fn the_cli_applies_gets_describes_and_deletes_resources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("store").display());
    let http = free_port();
    let child = wharf(&url)
        .args(["up", "--mqtt", "off", "--amqp", "off"])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn wharf up");
    let _up = KillOnDrop(child);
    wait_for_port(http);
    let server = format!("http://127.0.0.1:{http}");
    let file = dir.path().join("resources.yaml");
    std::fs::write(
        &file,
        "apiVersion: wharf/v1\nkind: Address\nmetadata: {name: orders}\n\
         spec: {type: queue, max_delivery: 5}\n---\n\
         - apiVersion: wharf/v1\n  kind: Tenant\n  metadata: {name: acme}\n  spec: {plan: small}\n\
         - apiVersion: wharf/v1\n  kind: User\n  metadata: {name: bob}\n  spec: {tenant: acme, password: pw}\n---\n\
         apiVersion: wharf/v1\nkind: Plan\nmetadata: {name: small}\nspec: {credit: 0.5}\n",
    )
    .expect("file");
    let run = |args: &[&str], via_api: bool| {
        let mut cmd = wharf(&url);
        if via_api {
            cmd.args(["--server", &server]);
        }
        let out = cmd.args(args).output().expect("wharf");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&["apply", "-f", file.to_str().expect("path")], true);
    assert!(ok, "{stderr}");
    // Plans first, then tenants, users, addresses.
    let order: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        ["plan/small", "tenant/acme", "user/bob", "address/orders"],
        "{stdout}"
    );
    // The reconciler (the housekeeper, every 2 s) makes them Ready.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, stdout, stderr) = run(&["get", "addresses"], true);
        assert!(ok, "{stderr}");
        let row = stdout.lines().nth(1).unwrap_or_default().to_string();
        if row.contains("Ready") {
            assert!(stdout.starts_with("NAME"), "{stdout}");
            assert!(row.starts_with("orders") && row.contains("queue"), "{row}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not Ready: {stdout}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let (ok, stdout, _) = run(&["get", "users", "bob", "-o", "json"], true);
    assert!(ok);
    let bob: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert!(
        bob["spec"]["password_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("$argon2id$")),
        "{bob}"
    );
    assert!(bob["spec"].get("password").is_none(), "{bob}");
    // Five messages wait in the queue: describe says so.
    let appended = wharf(&url)
        .args(["append", "orders", "--count", "5", "--prefix", "m"])
        .output()
        .expect("append");
    assert!(appended.status.success(), "{appended:?}");
    let (ok, stdout, stderr) = run(&["describe", "address", "orders"], true);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Status:      Ready"), "{stdout}");
    assert!(stdout.contains("Backlog:     5"), "{stdout}");
    // Bad resources and unknown names fail, naming what is wrong — the same on the store.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "q"}, "spec": {"max_delivery": 0}}"#,
    )
    .expect("bad");
    for via_api in [true, false] {
        let (ok, _, stderr) = run(&["apply", "-f", bad.to_str().expect("path")], via_api);
        assert!(!ok && stderr.contains("spec.max_delivery"), "{stderr}");
        let (ok, _, stderr) = run(&["delete", "address", "nope"], via_api);
        assert!(!ok && stderr.contains("does not exist"), "{stderr}");
        let (ok, _, stderr) = run(&["get", "queues"], via_api);
        assert!(!ok && stderr.contains("not a kind"), "{stderr}");
    }
    let (ok, stdout, _) = run(&["get", "plans", "-o", "yaml"], false);
    assert!(ok && stdout.contains("credit: 0.5"), "{stdout}");
    let (ok, stdout, _) = run(&["delete", "address", "orders"], true);
    assert!(ok && stdout.contains("address/orders deleted"), "{stdout}");
    let (ok, stdout, _) = run(&["get", "addresses"], false);
    assert!(ok && stdout.contains("No addresses found"), "{stdout}");
}

/// The web console in a real browser (Debian's chromium and chromedriver through Selenium):
/// it loads, creates a queue address with its form, shows it Ready with its backlog, and shows
/// the API's refusal of a duplicate. Skipped where chromium is not installed (CI installs it).
#[test]
fn the_console_creates_an_address_and_shows_it_ready() {
    let Some(python) = python() else {
        return;
    };
    if !std::path::Path::new("/usr/bin/chromedriver").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver"
        );
        eprintln!("chromedriver not installed: console test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("store").display());
    let (http, mqtt) = (free_port(), free_port());
    let child = wharf(&url)
        .args(["up", "--amqp", "off"])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn wharf up");
    let _up = KillOnDrop(child);
    wait_for_port(http);
    let shot = std::env::var("WHARF_CONSOLE_SCREENSHOT")
        .unwrap_or_else(|_| dir.path().join("console.png").display().to_string());
    let out = Command::new(&python)
        .arg(python_script("console_check.py"))
        .arg(http.to_string())
        .arg(&shot)
        .output()
        .expect("console_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.matches("ok ").count() == 5,
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("{stdout}");
}
