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

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"o"},"spec":{"retention":"a week"}}"#).expect("write");
    let out = wharf(&store)
        .args(["address", "apply", "-f"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.retention"));

    // Tenant names: in a resource, on the command line, in a users file.
    std::fs::write(&bad, r#"{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"o","tenant":"Acme Corp"}}"#).expect("write");
    let out = wharf(&store)
        .args(["address", "apply", "-f"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metadata.tenant"));
    let out = wharf(&store)
        .args(["--tenant", "Acme Corp", "streams"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tenant"));
    let users = dir.path().join("users.toml");
    let hash = wharf_tests::user_hash("pw");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\ntenant = \"a_b\"\n"),
    )
    .expect("write");
    let out = wharf(&store)
        .args([
            "adapter",
            "--mqtt",
            "127.0.0.1:0",
            "--amqp",
            "off",
            "--users",
        ])
        .arg(&users)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user[0].tenant"),
        "{out:?}"
    );
}

#[test]
fn wharf_up_applies_address_retention_and_frees_segments() {
    let (urls, dir) = stores();
    for url in urls {
        let run = |args: &[&str]| {
            let out = wharf(&url).args(args).output().expect("run wharf");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["append", "orders", "--count", "6", "--prefix", "old"]); // one segment each
        let address = dir.path().join("orders.json");
        std::fs::write(
            &address,
            r#"[{"apiVersion":"wharf/v1","kind":"Address","metadata":{"name":"orders"},
                 "spec":{"type":"queue","retention":"1s"}}]"#,
        )
        .expect("write address");
        run(&["address", "apply", "-f", address.to_str().expect("path")]);
        assert!(run(&["address", "list"]).contains("\"retention\":\"1s\""));
        std::thread::sleep(Duration::from_millis(1500));
        run(&["append", "orders", "--count", "1", "--prefix", "new"]);

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
        ]);
        let mut up = spawn(up_cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        let orders = loop {
            let streams = json_lines(&run(&["streams", "--json"]));
            let orders = streams
                .into_iter()
                .find(|s| s["stream"] == "orders")
                .expect("orders");
            // Trimmed, and (local filesystem) the freed segments collected: GC runs in a
            // later housekeeping pass than the trim.
            let collected = url.strip_prefix("file://").is_none_or(|path| {
                std::fs::read_dir(format!("{path}/segments")).map_or(0, |d| d.count()) <= 3
            });
            if orders["start_offset"] == 6 && orders["segments"] == 1 && collected {
                break orders;
            }
            assert!(
                Instant::now() < deadline,
                "{url}: retention not applied: {orders}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
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
        let dumped = json_lines(&run(&["dump", "orders"]));
        assert_eq!(dumped.len(), 1, "{url}: only the new record is left");
        assert_eq!(dumped[0]["payload"], "new0");
        if let Some(path) = url.strip_prefix("file://") {
            let left = std::fs::read_dir(format!("{path}/segments"))
                .expect("segments")
                .count();
            assert!(left <= 3, "{url}: old segments deleted, {left} left");
        }
        eprintln!("{url}: wharf up trimmed and collected: {orders}");
    }
}
