//! # wharf-tests
//!
//! End-to-end tests: the real `wharf` binary, as separate processes, against real stores
//! (the local filesystem, and the S3-compatible servers named by `WHARF_TEST_S3_URLS`), and
//! third-party readers (`pyarrow`). This file holds the helpers the tests share.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// The `wharf` binary built by this workspace (next to the test executable's `deps/`), or
/// the one `WHARF_BIN` names (to run the tests against another build, e.g. to check that a
/// new test fails on the code before a fix). `cargo test` does not rebuild it: `tests/run.sh`
/// runs `cargo build -p wharf` first.
pub fn wharf_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WHARF_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join("wharf");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p wharf` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// A `wharf` command on `store`. Adapters it starts serve no management API (tests run many
/// at once; one that wants it passes `--http 127.0.0.1:PORT`).
pub fn wharf(store: &str) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.arg("--store")
        .arg(store)
        .env("RUST_LOG", "warn")
        .env("WHARF_HTTP", "off");
    cmd
}

/// Spawn `wharf` with stdout piped.
pub fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wharf")
}

/// The store URLs end-to-end tests run against: a fresh local directory (kept alive by the
/// returned guard) and a fresh prefix on every configured S3-compatible server.
pub fn stores() -> (Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut urls = vec![format!("file://{}", dir.path().join("store").display())];
    urls.extend(
        wharf_log_testkit::s3_urls()
            .iter()
            .map(|u| wharf_log_testkit::with_fresh_prefix(u)),
    );
    if wharf_log_testkit::s3_urls().is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set WHARF_TEST_S3_URLS (see .ci/run)"
        );
        eprintln!("WHARF_TEST_S3_URLS is not set: only the local filesystem is tested");
    }
    (urls, dir)
}

/// Send a signal to a process by pid (`kill -STOP`, `-CONT`, `-KILL`).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Parse JSON lines.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// `wharf append STREAM --count N --prefix P --concurrency C` on `store`.
pub fn append_cmd(
    store: &str,
    stream: &str,
    prefix: &str,
    count: u64,
    concurrency: usize,
) -> Command {
    let mut cmd = wharf(store);
    cmd.args(["append", stream, "--prefix", prefix])
        .arg("--count")
        .arg(count.to_string())
        .arg("--concurrency")
        .arg(concurrency.to_string());
    cmd
}

/// A free TCP port on 127.0.0.1 for a server a test starts (bound and released). Taken below
/// the kernel's ephemeral range, one after another in this process: a port from
/// `bind(0)` is an ephemeral one, and between its release and the server's bind, any
/// outgoing connection of any process (the adapters' hundreds of S3 requests) could take it —
/// CI once saw "cannot listen for amqp …: Address already in use" that way. Falls back to
/// `bind(0)` where the ephemeral range leaves no room below it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_start > LOW + 1_000 {
        let span = ephemeral_start - LOW;
        // Processes (test binaries, run one after another) start at different places.
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (LOW + (start + n) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed when dropped, so a failing test leaves no adapter behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `wharf adapter` on `store` with MQTT on `port` (no AMQP listener); waits until it
/// accepts connections.
pub fn start_adapter(store: &str, port: u16) -> KillOnDrop {
    let mut cmd = wharf(store);
    cmd.args(["adapter", "--amqp", "off", "--mqtt"])
        .arg(format!("127.0.0.1:{port}"));
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn adapter");
    wait_for_port(port);
    KillOnDrop(child)
}

/// Start `wharf --config <config> adapter` on `store` with MQTT on `port`.
pub fn start_adapter_with_config(store: &str, port: u16, config: &std::path::Path) -> KillOnDrop {
    let child = wharf(store)
        .arg("--config")
        .arg(config)
        .args([
            "adapter",
            "--amqp",
            "off",
            "--mqtt",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn adapter");
    wait_for_port(port);
    KillOnDrop(child)
}

/// A moto S3 server of the test's own (the virtualenv's `moto_server` on a free port) with
/// `bucket` created, and its store URL: for tests that stop or kill the store under an
/// adapter without disturbing the shared servers. `None` without the test virtualenv.
pub fn own_moto(bucket: &str) -> Option<(KillOnDrop, String)> {
    let py = python()?;
    let moto_server = std::path::Path::new(&py)
        .parent()
        .map(|bin| bin.join("moto_server"))
        .expect("the virtualenv's bin directory");
    let port = free_port();
    // Its log goes to a file (a pipe nobody reads would fill and stop it), shown on failure.
    let log = std::env::temp_dir().join(format!("wharf-test-moto-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("moto log file");
    let moto = KillOnDrop(
        Command::new(&moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start moto_server"),
    );
    wait_for_port(port);
    // An unsigned PUT /<bucket> creates the bucket (as tests/run.sh does); tried for up to
    // 20 s (a full CI run once saw it refused right after the port first answered).
    let create = format!(
        "import time, urllib.request, urllib.error\n\
         for attempt in range(40):\n\
         \x20   try:\n\
         \x20       urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{port}/{bucket}', method='PUT'), timeout=10).read()\n\
         \x20       break\n\
         \x20   except urllib.error.URLError as e:\n\
         \x20       if attempt == 39: raise\n\
         \x20       print(f'attempt {{attempt}}: {{e}}', flush=True)\n\
         \x20       time.sleep(0.5)\n"
    );
    let mut c = Command::new(&py);
    c.args(["-c", &create]);
    let out = c.output().expect("python");
    assert!(
        out.status.success(),
        "creating the bucket on moto_server (port {port}) failed: {}{}\nmoto's log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    if !out.stdout.is_empty() {
        eprintln!(
            "moto_server on {port} answered the bucket creation late: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Some((
        moto,
        format!("s3://{bucket}?endpoint=http://127.0.0.1:{port}"),
    ))
}

/// Start `wharf [--config <config>] adapter` on `store` with AMQP on `port` (no MQTT
/// listener) and `extra` arguments; waits until it accepts connections.
pub fn start_amqp_adapter(
    store: &str,
    port: u16,
    config: Option<&std::path::Path>,
    extra: &[&str],
) -> KillOnDrop {
    let mut cmd = wharf(store);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let child = cmd
        .args([
            "adapter",
            "--mqtt",
            "off",
            "--amqp",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn adapter");
    wait_for_port(port);
    KillOnDrop(child)
}

/// `node` with the test packages of tests/node installed (tests/run.sh runs `npm ci`); under
/// CI their absence is a failure.
pub fn node_script(name: &str) -> Option<Command> {
    let dir = format!("{}/node", manifest_dir());
    let ready = have("node") && std::path::Path::new(&dir).join("node_modules").is_dir();
    assert!(
        ready || std::env::var_os("CI").is_none(),
        "CI must install tests/node (npm ci; see tests/run.sh)"
    );
    if !ready {
        eprintln!("node or tests/node/node_modules missing: skipping");
        return None;
    }
    let mut cmd = Command::new("node");
    cmd.arg(format!("{dir}/{name}"));
    Some(cmd)
}

/// Wait (up to 30 s) until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether a third-party command is installed; under CI its absence is a failure.
pub fn have(cmd: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "CI must install {cmd} (see tests/run.sh)"
    );
    if !found {
        eprintln!("{cmd} is not installed: skipping");
    }
    found
}

/// A Mosquitto command-line client (`mosquitto_pub`, `mosquitto_sub`) aimed at 127.0.0.1:`port`.
pub fn mosquitto(tool: &str, port: u16) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p"]).arg(port.to_string());
    cmd
}

/// A `mosquitto_sub` whose subscription the broker has acknowledged. [`Subscriber::start`]
/// runs it with `-d` and returns once it printed that it received its SUBACK, so a test
/// publishes after the subscription exists instead of sleeping and hoping. Its output is
/// collected without the `-d` lines (`Client <id> sending|received ...`, `Subscribed (mid: ...`).
#[derive(Debug)]
pub struct Subscriber {
    child: KillOnDrop,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The `-d` lines (packets sent and received).
    debug: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Start `cmd` (a `mosquitto_sub` command, see [`mosquitto`]) and wait up to 20 s for its
    /// SUBACK; panics, naming the command, if it exits or the SUBACK does not come.
    pub fn start(cmd: Command) -> Subscriber {
        let what = format!("{cmd:?}");
        // Line-buffered: mosquitto_sub flushes after each message but not after its `-d`
        // lines, which a pipe would hold back until exit.
        let mut line_buffered = Command::new("stdbuf");
        line_buffered
            .arg("-oL")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .arg("-d");
        let mut child = KillOnDrop(
            line_buffered
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn stdbuf mosquitto_sub"),
        );
        let out = child.stdout.take().expect("stdout piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let debug = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (acked, subscribed) = std::sync::mpsc::channel();
        let (sink, debug_sink) = (lines.clone(), debug.clone());
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let debug = (l.starts_with("Client ")
                    && (l.contains(" sending ") || l.contains(" received ")))
                    || l.starts_with("Subscribed (mid: ");
                if debug {
                    if l.contains(" received SUBACK") {
                        let _ = acked.send(());
                    }
                    debug_sink.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                } else {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                }
            }
        });
        if subscribed
            .recv_timeout(std::time::Duration::from_secs(20))
            .is_err()
        {
            panic!("no SUBACK for {what} within 20 s");
        }
        Subscriber {
            child,
            lines,
            debug,
            reader: Some(reader),
        }
    }

    /// The `-d` lines so far (`Client <id> received DISCONNECT (139)`, ...).
    pub fn debug_lines(&self) -> Vec<String> {
        self.debug.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What it printed so far (messages, with the `-d` lines left out).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait for it to exit (`-C`, `-W`): its status and everything it printed.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().expect("wait for mosquitto_sub");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.lines())
    }

    /// [`Subscriber::wait`], with the `-d` lines too.
    pub fn wait_all(mut self) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        let status = self.child.wait().expect("wait for mosquitto_sub");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.lines(), self.debug_lines())
    }

    /// Stop it and return everything it printed.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.lines()
    }
}

/// The Python with the test requirements (`WHARF_PYTHON`, set by tests/run.sh); under CI its
/// absence is a failure.
pub fn python() -> Option<std::ffi::OsString> {
    let p = std::env::var_os("WHARF_PYTHON");
    assert!(
        p.is_some() || std::env::var_os("CI").is_none(),
        "CI must set WHARF_PYTHON (see tests/run.sh)"
    );
    if p.is_none() {
        eprintln!("WHARF_PYTHON is not set: skipping");
    }
    p
}

/// An argon2 hash of `password` from `wharf user hash`, as a user makes one for a users file.
pub fn user_hash(password: &str) -> String {
    use std::io::Write;
    let mut hash = Command::new(wharf_bin())
        .args(["user", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wharf user hash");
    hash.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    let hash = hash.wait_with_output().expect("hash");
    let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// Path of a script in tests/python.
pub fn python_script(name: &str) -> String {
    format!("{}/python/{name}", manifest_dir())
}

/// Run a client script or program to completion; panics with its output unless it succeeded,
/// and returns its standard output.
pub fn run_checked(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().expect(what);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// How many checks a scenario script reported passing (its lines starting with `ok `).
pub fn ok_lines(out: &str) -> usize {
    out.lines().filter(|l| l.starts_with("ok ")).count()
}

/// This package's directory at run time (cargo sets it), not the one it was built in: a
/// shared target directory can hold a build made in another clone.
pub fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
