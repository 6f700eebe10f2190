//! The `wharf` command as a user meets it: configuration errors, addresses, and `wharf up`
//! keeping a store tidy.

use std::time::{Duration, Instant};

use wharf_tests::{json_lines, signal, spawn, stores, wharf};

#[test]
fn bad_configuration_fails_at_start_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().join("s").display());
    for (text, field) in [
        ("[log]\nmax_segment_bytes = 1\n", "log.max_segment_bytes"),
        ("[log]\nlingr = \"1ms\"\n", "lingr"),
        ("[log]\nlinger = \"soon\"\n", "linger"),
        ("[retention]\nmax_age = 7\n", "max_age"),
        ("[mqtt]\nconnect_timeout = \"0s\"\n", "mqtt.connect_timeout"),
        (
            "[amqp]\nhandshake_timeout = \"1ms\"\n",
            "amqp.handshake_timeout",
        ),
        ("[mqtt]\nmax_handshakes = 0\n", "mqtt.max_handshakes"),
    ] {
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(&cfg, text).expect("write config");
        let out = wharf(&store)
            .arg("--config")
            .arg(&cfg)
            .arg("streams")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text:?} must fail");
        assert!(
            stderr.contains(field),
            "{text:?}: error must name {field}: {stderr}"
        );
    }
    let out = wharf("ftp://nowhere").arg("streams").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
    // Not a URL, or a relative directory: refused naming the setting, nothing created in the
    // working directory.
    let cwd = tempfile::tempdir().expect("tempdir");
    for (url, says) in [
        ("garbage", "not a store URL"),
        ("file://relative/dir", "must be absolute"),
    ] {
        let out = wharf(url)
            .current_dir(cwd.path())
            .arg("streams")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url} must fail");
        assert!(
            stderr.contains("--store") && stderr.contains(says),
            "{url}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(cwd.path()).expect("cwd").count(),
            0,
            "{url}: nothing created"
        );
    }
    let cfg = dir.path().join("store.toml");
    std::fs::write(&cfg, "store = \"file://./here\"\n").expect("write config");
    let out = std::process::Command::new(wharf_tests::wharf_bin())
        .current_dir(cwd.path())
        .arg("--config")
        .arg(&cfg)
        .arg("streams")
        .env_remove("WHARF_STORE")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("store (settings file)"), "{stderr}");
    assert_eq!(std::fs::read_dir(cwd.path()).expect("cwd").count(), 0);
    let out = wharf("s3://b/p?endpoint=http://127.0.0.1:9")
        .env_remove("AWS_ACCESS_KEY_ID")
        .arg("streams")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AWS_ACCESS_KEY_ID"),
        "names the missing credentials: {stderr}"
    );

    // Bad resources and names fail naming the field.
    let fails_naming = |args: &[&str], field: &str| {
        let out = wharf(&store).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(field),
            "{args:?} must name {field}: {stderr}"
        );
    };
    let bad = dir.path().join("bad.json");
    let bad_path = bad.to_str().expect("path");
    std::fs::write(&bad, r#"{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"o"},"spec":{"retention":"a week"}}"#).expect("write");
    fails_naming(&["address", "apply", "-f", bad_path], "spec.retention");
    // Tenant names: in a resource, on the command line, in a users file.
    std::fs::write(&bad, r#"{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"o","tenant":"Acme Corp"}}"#).expect("write");
    fails_naming(&["address", "apply", "-f", bad_path], "metadata.tenant");
    // Types and list items are named too (wharf-resources).
    std::fs::write(&bad, r#"{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"o"},"spec":{"max_delivery":"5"}}"#).expect("write");
    fails_naming(&["address", "apply", "-f", bad_path], "spec.max_delivery");
    std::fs::write(&bad, r#"{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"o"},"spec":{"mqtt_topics":["ok/#","a/#/b"]}}"#).expect("write");
    fails_naming(&["address", "apply", "-f", bad_path], "spec.mqtt_topics[1]");
    // The schema they are checked against, for tools and the API.
    let out = wharf(&store)
        .args(["address", "schema"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON Schema");
    assert_eq!(
        schema["$defs"]["AddressSpec"]["properties"]["max_delivery"]["minimum"], 1,
        "{schema}"
    );
    fails_naming(&["--tenant", "Acme Corp", "streams"], "--tenant");
    let users = dir.path().join("users.toml");
    let hash = wharf_tests::user_hash("pw");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\ntenant = \"a_b\"\n"),
    )
    .expect("write");
    let users = users.to_str().expect("path");
    fails_naming(
        &[
            "adapter",
            "--mqtt",
            "127.0.0.1:0",
            "--amqp",
            "off",
            "--users",
            users,
        ],
        "user[0].tenant",
    );
}

/// `wharf up` housekeeping in every tenant: the default one, one its users file serves
/// (`acme`), and one only the store knows (`gone`, its users removed).
#[test]
fn wharf_up_applies_address_retention_and_frees_segments() {
    let (urls, dir) = stores();
    let users = dir.path().join("users.toml");
    let hash = wharf_tests::user_hash("pw");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\ntenant = \"acme\"\n"),
    )
    .expect("users");
    const TENANTS: [&str; 3] = ["default", "acme", "gone"];
    for url in urls {
        let run = |tenant: &str, args: &[&str]| {
            let out = wharf(&url)
                .args(["--tenant", tenant])
                .args(args)
                .output()
                .expect("run wharf");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let address = dir.path().join("orders.json");
        std::fs::write(
            &address,
            r#"[{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"orders"},
                 "spec":{"type":"queue","retention":"1s"}}]"#,
        )
        .expect("write address");
        for t in TENANTS {
            run(t, &["append", "orders", "--count", "6", "--prefix", "old"]); // one segment each
            run(
                t,
                &["address", "apply", "-f", address.to_str().expect("path")],
            );
            assert!(run(t, &["address", "list"]).contains("\"retention\":\"1s\""));
        }
        std::thread::sleep(Duration::from_millis(1500));
        for t in TENANTS {
            run(t, &["append", "orders", "--count", "1", "--prefix", "new"]);
        }

        let cfg = dir.path().join("up.toml");
        std::fs::write(&cfg, "[log]\ngc_grace = \"0s\"\ncheckpoint_every = 1\n").expect("cfg");
        let mut up_cmd = wharf(&url);
        up_cmd.arg("--config").arg(&cfg).args([
            "up",
            "--housekeeping",
            "200ms",
            "--mqtt",
            "127.0.0.1:0",
            "--amqp",
            "127.0.0.1:0",
            "--users",
            users.to_str().expect("path"),
        ]);
        let mut up = spawn(up_cmd);
        let segments = |tenant: &str| {
            url.strip_prefix("file://").map(|path| {
                let dir = match tenant {
                    "default" => format!("{path}/segments"),
                    t => format!("{path}/tenants/{t}/segments"),
                };
                std::fs::read_dir(dir).map_or(0, |d| d.count())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for t in TENANTS {
            let orders = loop {
                let streams = json_lines(&run(t, &["streams", "--json"]));
                let orders = streams
                    .into_iter()
                    .find(|s| s["stream"] == "orders")
                    .expect("orders");
                // Trimmed, and (local filesystem) the freed segments collected: GC runs in a
                // later housekeeping pass than the trim.
                let collected = segments(t).is_none_or(|n| n <= 3);
                if orders["start_offset"] == 6 && orders["segments"] == 1 && collected {
                    break orders;
                }
                assert!(
                    Instant::now() < deadline,
                    "{url}: retention not applied in tenant {t}: {orders}"
                );
                std::thread::sleep(Duration::from_millis(200));
            };
            eprintln!("{url}: wharf up trimmed and collected in tenant {t}: {orders}");
        }
        // Ctrl-C, or SIGTERM as Kubernetes sends; either must work even mid-housekeeping.
        let sig = if url.starts_with("file://") {
            "INT"
        } else {
            "TERM"
        };
        signal(up.id(), sig);
        assert!(
            up.wait().expect("wait up").success(),
            "{url}: wharf up stops cleanly on SIG{sig}"
        );
        for t in TENANTS {
            let dumped = json_lines(&run(t, &["dump", "orders"]));
            assert_eq!(dumped.len(), 1, "{url}: only the new record is left in {t}");
            assert_eq!(dumped[0]["payload"], "new0");
            if let Some(left) = segments(t) {
                assert!(left <= 3, "{url}: old segments deleted in {t}, {left} left");
            }
        }
    }
}
