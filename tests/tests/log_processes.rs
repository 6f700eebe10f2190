//! The log under several real `wharf` processes: concurrent writers on one stream, a writer
//! killed with SIGKILL, and a paused exclusive consumer that loses its lease.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader},
    sync::Arc,
    time::{Duration, Instant},
};

use wharf_log::{Log, Store, SystemClock};
use wharf_log_format::{Offset, StreamId};
use wharf_tests::{append_cmd, json_lines, signal, spawn, stores, wharf};

fn read_all(url: &str, stream: &str) -> Vec<(u64, String)> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(url).expect("open store");
        let log = Log::open_with(store, Default::default(), Arc::new(SystemClock))
            .await
            .expect("open log");
        let s = StreamId::new(stream).expect("stream id");
        log.read(&s, Offset(0), usize::MAX)
            .await
            .expect("read")
            .into_iter()
            .map(|r| {
                (
                    r.offset.0,
                    String::from_utf8_lossy(&r.record.payload).into_owned(),
                )
            })
            .collect()
    })
}

/// The numbers of writer `w`'s records (`w<w>-<n>`), in the order they are stored.
fn numbers_of(stored: &[(u64, String)], w: usize) -> Vec<u64> {
    stored
        .iter()
        .filter_map(|(_, p)| p.strip_prefix(&format!("w{w}-")))
        .map(|n| n.parse().expect("n"))
        .collect()
}

#[test]
fn four_writer_processes_append_to_one_stream() {
    let (urls, _dir) = stores();
    for url in urls {
        let per_writer = 300u64;
        let children: Vec<_> = (0..4)
            .map(|w| {
                spawn(append_cmd(
                    &url,
                    "shared",
                    &format!("w{w}-"),
                    per_writer,
                    16,
                ))
            })
            .collect();
        let mut acked = Vec::new();
        for child in children {
            let out = child.wait_with_output().expect("wait");
            assert!(out.status.success(), "writer failed on {url}");
            acked.extend(json_lines(&String::from_utf8_lossy(&out.stdout)));
        }
        assert_eq!(
            acked.len(),
            4 * per_writer as usize,
            "every append acknowledged"
        );

        let stored = read_all(&url, "shared");
        assert_eq!(
            stored.len(),
            acked.len(),
            "{url}: each acknowledged record once"
        );
        let by_offset: BTreeMap<u64, String> = stored.iter().cloned().collect();
        assert_eq!(by_offset.len(), stored.len(), "{url}: no offset twice");
        let offsets: Vec<u64> = by_offset.keys().copied().collect();
        assert_eq!(
            offsets,
            (0..stored.len() as u64).collect::<Vec<_>>(),
            "dense offsets"
        );
        for a in &acked {
            let o = a["offset"].as_u64().expect("offset");
            let p = a["payload"].as_str().expect("payload");
            assert_eq!(
                by_offset.get(&o).map(String::as_str),
                Some(p),
                "{url}: ack {a}"
            );
        }
        for w in 0..4 {
            let mine = numbers_of(&stored, w);
            assert_eq!(
                mine,
                (0..per_writer).collect::<Vec<_>>(),
                "{url}: writer {w} in order"
            );
        }
        eprintln!("{url}: 4 processes x {per_writer} records: all present, once, in order");
    }
}

#[test]
fn acknowledged_records_survive_kill_9_of_the_writer() {
    let (urls, _dir) = stores();
    for url in urls {
        let mut child = spawn(append_cmd(&url, "k9", "r", 10_000_000, 256));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut acked = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.len() < 2000 && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(l)) => acked.push(l),
                _ => break,
            }
        }
        signal(child.id(), "KILL");
        let _ = child.wait();
        // Lines already written to the pipe before the kill were acknowledged too.
        acked.extend(lines.map_while(Result::ok));
        assert!(
            acked.len() >= 2000,
            "{url}: only {} acks before the deadline",
            acked.len()
        );
        let stored: BTreeMap<u64, String> = read_all(&url, "k9").into_iter().collect();
        for a in json_lines(&acked.join("\n")) {
            let o = a["offset"].as_u64().expect("offset");
            assert_eq!(
                stored.get(&o).map(String::as_str),
                a["payload"].as_str(),
                "{url}: lost {a}"
            );
        }
        let distinct: HashSet<&String> = stored.values().collect();
        assert_eq!(distinct.len(), stored.len(), "{url}: no duplicates");
        // A new writer continues after whatever the dead one managed to store.
        let out = append_cmd(&url, "k9", "after", 1, 1)
            .output()
            .expect("append after kill");
        assert!(out.status.success());
        let next = json_lines(&String::from_utf8_lossy(&out.stdout))[0]["offset"].as_u64();
        assert_eq!(
            next,
            Some(stored.len() as u64),
            "{url}: offsets continue, never reused"
        );
        eprintln!(
            "{url}: {} acknowledged before kill -9, all stored",
            acked.len()
        );
    }
}

#[test]
fn paused_writer_resumes_without_corrupting_or_duplicating() {
    let (urls, _dir) = stores();
    for url in urls {
        let mut a = spawn(append_cmd(&url, "p", "a", 2000, 64));
        let mut a_lines = BufReader::new(a.stdout.take().expect("stdout")).lines();
        let mut a_acked: Vec<String> = Vec::new();
        while a_acked.len() < 200 {
            a_acked.push(a_lines.next().expect("A acks").expect("line"));
        }
        // A is paused mid-stream with appends in flight; B writes meanwhile.
        signal(a.id(), "STOP");
        let b = append_cmd(&url, "p", "b", 500, 64).output().expect("B");
        assert!(b.status.success());
        signal(a.id(), "CONT");
        a_acked.extend(a_lines.map_while(Result::ok));
        assert!(
            a.wait().expect("wait A").success(),
            "{url}: A finishes after resuming"
        );
        assert_eq!(a_acked.len(), 2000);

        let stored = read_all(&url, "p");
        assert_eq!(stored.len(), 2500, "{url}: every record once");
        let by_offset: BTreeMap<u64, String> = stored.iter().cloned().collect();
        let b_acked = json_lines(&String::from_utf8_lossy(&b.stdout));
        for v in json_lines(&a_acked.join("\n")).iter().chain(&b_acked) {
            let o = v["offset"].as_u64().expect("offset");
            assert_eq!(
                by_offset.get(&o).map(String::as_str),
                v["payload"].as_str(),
                "{url}: {v}"
            );
        }
        for (prefix, n) in [("a", 2000u64), ("b", 500)] {
            let mine: Vec<u64> = stored
                .iter()
                .filter(|(_, p)| p.starts_with(prefix))
                .map(|(_, p)| p[1..].parse().expect("n"))
                .collect();
            assert_eq!(mine, (0..n).collect::<Vec<_>>(), "{url}: {prefix} in order");
        }
        eprintln!("{url}: paused writer resumed; 2500 records once, in order");
    }
}

#[test]
fn paused_exclusive_consumer_is_fenced() {
    let (urls, _dir) = stores();
    for url in urls {
        let out = append_cmd(&url, "jobs", "j", 5, 1)
            .output()
            .expect("append");
        assert!(out.status.success());

        // A holds the cursor's lease and consumes everything, then waits for more.
        let mut a_cmd = wharf(&url);
        a_cmd.args([
            "consume",
            "jobs",
            "--cursor",
            "c",
            "--exclusive",
            "--lease-ttl",
            "1s",
            "--follow",
        ]);
        let mut a = spawn(a_cmd);
        let mut a_out = BufReader::new(a.stdout.take().expect("stdout")).lines();
        for _ in 0..5 {
            a_out.next().expect("A prints a record").expect("line");
        }
        // A prints before it commits its acks (at-least-once): wait for the commit to land.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = wharf(&url)
                .args(["cursor", "jobs", "c"])
                .output()
                .expect("cursor");
            let state = &json_lines(&String::from_utf8_lossy(&out.stdout))[0];
            if state["committed"] == 5 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url}: A never committed: {state}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Pause A past its lease.
        signal(a.id(), "STOP");
        std::thread::sleep(Duration::from_millis(2500));

        // B takes over: it gets the lease with a higher epoch, fences the cursor, consumes.
        let out = append_cmd(&url, "jobs", "late", 3, 1)
            .output()
            .expect("append");
        assert!(out.status.success());
        let b = wharf(&url)
            .args([
                "consume",
                "jobs",
                "--cursor",
                "c",
                "--exclusive",
                "--lease-ttl",
                "1s",
                "--max",
                "2",
            ])
            .output()
            .expect("consume B");
        assert!(
            b.status.success(),
            "B: {}",
            String::from_utf8_lossy(&b.stderr)
        );
        let b_got: Vec<String> = json_lines(&String::from_utf8_lossy(&b.stdout))
            .iter()
            .map(|v| v["payload"].as_str().expect("payload").to_string())
            .collect();
        assert_eq!(
            b_got,
            vec!["late0", "late1"],
            "{url}: B resumes after A's acks"
        );

        // A resumes: it must notice it was fenced and stop without acknowledging anything.
        signal(a.id(), "CONT");
        let status = a.wait().expect("wait A");
        assert_eq!(status.code(), Some(3), "{url}: A exits as fenced");
        let leftovers: Vec<String> = a_out.map_while(Result::ok).collect();
        assert!(
            leftovers.is_empty(),
            "{url}: A handed out {leftovers:?} after losing its lease"
        );

        let cursor = wharf(&url)
            .args(["cursor", "jobs", "c"])
            .output()
            .expect("cursor");
        let state = &json_lines(&String::from_utf8_lossy(&cursor.stdout))[0];
        assert_eq!(
            state["committed"], 7,
            "{url}: j0..j4 by A, late0..late1 by B: {state}"
        );
        assert!(state["epoch"].as_u64() >= Some(2), "{url}: {state}");
        eprintln!("{url}: paused consumer fenced; cursor {state}");
    }
}

/// The pid of the process holding the log's sequencer role (its writer id ends in its pid).
fn sequencer_pid(url: &str) -> Option<u32> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(url).expect("open store");
        let log = Log::open_with(store, Default::default(), Arc::new(SystemClock))
            .await
            .expect("open log");
        let lease = log
            .lease_state(wharf_log::SEQUENCER_LEASE)
            .await
            .expect("lease")?;
        lease.holder.rsplit('-').next()?.parse().ok()
    })
}

/// Four writer processes; the one holding the sequencer role is killed with -9 mid-run. The
/// other three go on (their batches are committed by themselves, then by the next sequencer);
/// every record any of them acknowledged — the dead one's too — is stored once, in its
/// writer's order, at the offset it was told.
#[test]
fn kill_9_of_the_sequencer_among_four_writer_processes() {
    let (urls, _dir) = stores();
    for url in urls {
        // Enough that nobody is done when the sequencer dies (the local filesystem is fast).
        let per_writer = if url.starts_with("file:") {
            20_000
        } else {
            1500
        };
        let mut children: Vec<_> = (0..4)
            .map(|w| spawn(append_cmd(&url, "seq", &format!("w{w}-"), per_writer, 32)))
            .collect();
        let mut outputs: Vec<_> = children
            .iter_mut()
            .map(|c| {
                let (tx, rx) = std::sync::mpsc::channel::<String>();
                let stdout = c.stdout.take().expect("stdout");
                std::thread::spawn(move || {
                    for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                });
                (rx, Vec::<String>::new())
            })
            .collect();
        // Let everyone get going, then find and kill the sequencer.
        let deadline = Instant::now() + Duration::from_secs(60);
        while outputs.iter().map(|o| o.1.len()).sum::<usize>() < 400 && Instant::now() < deadline {
            for (rx, got) in &mut outputs {
                got.extend(rx.try_iter());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = sequencer_pid(&url).expect("someone sequences");
        let victim = children
            .iter()
            .position(|c| c.id() == pid)
            .expect("the sequencer is one of the writers");
        signal(pid, "KILL");
        let before_kill: usize = outputs.iter().map(|o| o.1.len()).sum();
        for (i, c) in children.iter_mut().enumerate() {
            let status = c.wait().expect("wait");
            assert!(i == victim || status.success(), "{url}: writer {i} failed");
        }
        let mut acked = Vec::new();
        for (i, (rx, mut got)) in outputs.into_iter().enumerate() {
            got.extend(rx.iter());
            if i != victim {
                assert_eq!(got.len() as u64, per_writer, "{url}: writer {i} finished");
            }
            acked.extend(json_lines(&got.join("\n")));
        }
        let stored = read_all(&url, "seq");
        let by_offset: BTreeMap<u64, String> = stored.iter().cloned().collect();
        let distinct: HashSet<&String> = by_offset.values().collect();
        assert_eq!(distinct.len(), stored.len(), "{url}: no record twice");
        assert_eq!(
            by_offset.keys().copied().collect::<Vec<_>>(),
            (0..stored.len() as u64).collect::<Vec<_>>(),
            "{url}: dense offsets"
        );
        for a in &acked {
            let o = a["offset"].as_u64().expect("offset");
            assert_eq!(
                by_offset.get(&o).map(String::as_str),
                a["payload"].as_str(),
                "{url}: lost {a}"
            );
        }
        for w in 0..4 {
            let mine = numbers_of(&stored, w);
            assert!(
                mine.windows(2).all(|p| p[0] < p[1]),
                "{url}: writer {w} in order"
            );
        }
        assert!(
            (acked.len() as u64) < 4 * per_writer,
            "{url}: the sequencer was killed before it finished"
        );
        eprintln!(
            "{url}: sequencer (writer {victim}) killed after {before_kill} acks; {} acknowledged, all stored once, in order",
            acked.len()
        );
    }
}

/// Four `wharf adapter`s behind one MQTT and one AMQP port (`--reuse-port`), on the first
/// S3-compatible server (the local filesystem without one); Paho and Qpid Proton publishers
/// on all of them; each adapter in turn killed with -9 and restarted. Every acknowledged
/// message reaches a persistent MQTT subscriber, in each publisher's order.
#[test]
fn four_adapters_killed_in_turn_lose_nothing() {
    let Some(py) = wharf_tests::python() else {
        return;
    };
    let (urls, _dir) = stores();
    // The first S3-compatible server (ministack in CI), else the local filesystem.
    let url = urls.get(1).or(urls.first()).expect("a store").clone();
    let (mqtt, amqp) = (wharf_tests::free_port(), wharf_tests::free_port());
    let start = || {
        wharf_tests::KillOnDrop(
            wharf(&url)
                .args(["adapter", "--reuse-port"])
                .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
                .args(["--amqp", &format!("127.0.0.1:{amqp}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("adapter"),
        )
    };
    let mut adapters: Vec<_> = (0..4).map(|_| start()).collect();
    wharf_tests::wait_for_port(mqtt);
    wharf_tests::wait_for_port(amqp);
    std::thread::sleep(Duration::from_millis(500)); // all bound
    let mut check = std::process::Command::new(&py);
    check
        .arg(wharf_tests::python_script("four_adapters_kill9.py"))
        .args([&mqtt.to_string(), &amqp.to_string(), "12"])
        .stdout(std::process::Stdio::piped());
    let mut script = check.spawn().expect("script");
    let mut lines = BufReader::new(script.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("ready"),
        "the clients started"
    );
    for adapter in adapters.iter_mut() {
        std::thread::sleep(Duration::from_millis(2000));
        signal(adapter.id(), "KILL");
        let _ = adapter.wait();
        *adapter = start();
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = script.wait().expect("script");
    assert!(status.success(), "{url}: {rest:?}");
    let ok = rest.iter().find(|l| l.starts_with("ok ")).expect("ok line");
    eprintln!("{url}: {ok}");
}
