//! The journal store against the object store contract the log relies on, with real files:
//! create-only segments from several store handles at once (each its own file descriptors, as
//! separate processes have), torn appends, sealed files and their indexes, deletion, large
//! (external) segments, stores written before the journal, tenants, and `kill -9` of a process
//! in the middle of its appends.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path as FsPath, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use wharf_log_format::journal::{self, EntryKind, FILE_HEADER_LEN, FileHeader};
use wharf_log_fs::{FsOptions, FsStore};

fn seg(n: u64) -> Path {
    Path::from(format!("segments/{n:020}.arrow"))
}

fn body(tag: &str, n: u64, len: usize) -> Bytes {
    let mut b = format!("{tag}:{n}:").into_bytes();
    b.resize(len.max(b.len()), b'.');
    Bytes::from(b)
}

async fn create(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> object_store::Result<()> {
    store
        .put_opts(
            path,
            PutPayload::from_bytes(bytes),
            PutOptions::from(PutMode::Create),
        )
        .await
        .map(|_| ())
}

async fn get(store: &dyn ObjectStore, path: &Path) -> Option<Bytes> {
    match store.get(path).await {
        Ok(r) => Some(r.bytes().await.expect("bytes")),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("get {path}: {e}"),
    }
}

async fn listed(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = store
        .list(Some(&Path::from(prefix)))
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    names.sort();
    names
}

fn open(dir: &FsPath, opts: FsOptions) -> Arc<FsStore> {
    Arc::new(FsStore::new(dir, opts).expect("store"))
}

fn journal_files(dir: &FsPath, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v.sort();
    v
}

#[tokio::test]
async fn create_only_get_list_delete() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), FsOptions::default());
    create(store.as_ref(), &seg(1), body("a", 1, 100))
        .await
        .expect("create");
    let again = create(store.as_ref(), &seg(1), body("b", 1, 100)).await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(get(store.as_ref(), &seg(1)).await, Some(body("a", 1, 100)));
    assert_eq!(get(store.as_ref(), &seg(2)).await, None);
    // A range and a head, as object stores answer them.
    let range = store.get_range(&seg(1), 2..5).await.expect("range");
    assert_eq!(&range[..], &body("a", 1, 100)[2..5]);
    assert_eq!(store.head(&seg(1)).await.expect("head").size, 100);
    // Other keys are plain files.
    create(
        store.as_ref(),
        &Path::from("checkpoints/00000000000000000001.json"),
        Bytes::from_static(b"{}"),
    )
    .await
    .expect("checkpoint");
    assert!(
        dir.path()
            .join("checkpoints/00000000000000000001.json")
            .exists()
    );
    assert!(!dir.path().join("segments").exists(), "no file per segment");
    assert_eq!(
        listed(store.as_ref(), "segments").await,
        vec![seg(1).to_string()]
    );
    store.delete(&seg(1)).await.expect("delete");
    assert_eq!(get(store.as_ref(), &seg(1)).await, None);
    assert!(listed(store.as_ref(), "segments").await.is_empty());
    // A deleted number stays taken while its journal file exists.
    let again = create(store.as_ref(), &seg(1), body("c", 1, 100)).await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    // A store opened afresh reads what is there.
    create(store.as_ref(), &seg(2), body("a", 2, 10))
        .await
        .expect("create 2");
    let other = open(dir.path(), FsOptions::default());
    assert_eq!(get(other.as_ref(), &seg(2)).await, Some(body("a", 2, 10)));
    // Refused: what the log never does to a segment.
    let overwrite = store
        .put_opts(
            &seg(2),
            PutPayload::from_static(b"x"),
            PutOptions::default(),
        )
        .await;
    assert!(matches!(
        overwrite,
        Err(object_store::Error::NotImplemented { .. })
    ));
}

/// Several handles (own descriptors, like processes) race for the same numbers from threads:
/// every number has exactly one winner, everybody reads the winner's bytes, and each loser
/// was told `AlreadyExists`.
#[test]
fn racing_writers_agree_on_one_winner_per_number() {
    let dir = tempfile::tempdir().expect("dir");
    // Small files, so that seals and new files happen under the race too.
    let opts = FsOptions {
        roll_bytes: 16 << 10,
        inline_max: 4 << 20,
    };
    const WRITERS: usize = 4;
    const NUMBERS: u64 = 300;
    let won: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let root = dir.path().to_path_buf();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("rt");
                    let store = open(&root, opts);
                    rt.block_on(async {
                        let mut won = Vec::new();
                        for n in 1..=NUMBERS {
                            match create(
                                store.as_ref(),
                                &seg(n),
                                body(&format!("w{w}"), n, 200 + n as usize),
                            )
                            .await
                            {
                                Ok(()) => won.push(n),
                                Err(object_store::Error::AlreadyExists { .. }) => {}
                                Err(e) => panic!("writer {w}, {n}: {e}"),
                            }
                        }
                        won
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    let mut winner: BTreeMap<u64, usize> = BTreeMap::new();
    for (w, numbers) in won.iter().enumerate() {
        for n in numbers {
            assert!(
                winner.insert(*n, w).is_none(),
                "{n} won by writer {w} and by writer {}",
                winner[n]
            );
        }
    }
    assert_eq!(winner.len() as u64, NUMBERS, "every number has a winner");
    assert!(
        journal_files(dir.path(), "wal").len() > 1,
        "the journal rolled"
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let reader = open(dir.path(), opts);
        for (n, w) in &winner {
            let expected = body(&format!("w{w}"), *n, 200 + *n as usize);
            assert_eq!(get(reader.as_ref(), &seg(*n)).await, Some(expected), "{n}");
        }
        assert_eq!(
            listed(reader.as_ref(), "segments").await.len() as u64,
            NUMBERS
        );
    });
}

/// Append raw bytes to the newest journal file, as a process that died mid-append leaves them.
fn append_raw(dir: &FsPath, bytes: &[u8]) {
    let file = journal_files(dir, "wal").pop().expect("a journal file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open");
    f.write_all(bytes).expect("append");
}

fn newest_magic(dir: &FsPath) -> u64 {
    let file = journal_files(dir, "wal").pop().expect("a journal file");
    let bytes = std::fs::read(file).expect("read");
    FileHeader::decode(&bytes[..FILE_HEADER_LEN])
        .expect("header")
        .entry_magic
}

#[tokio::test]
async fn a_reader_that_looked_before_the_journal_existed_finds_it() {
    let dir = tempfile::tempdir().expect("dir");
    let reader = open(dir.path(), FsOptions::default());
    // The reader looks first: no journal at all.
    assert_eq!(get(reader.as_ref(), &seg(1)).await, None);
    assert!(listed(reader.as_ref(), "segments").await.is_empty());
    // Another process starts the journal.
    let writer = open(dir.path(), FsOptions::default());
    create(writer.as_ref(), &seg(1), body("w", 1, 10))
        .await
        .expect("1");
    assert_eq!(get(reader.as_ref(), &seg(1)).await, Some(body("w", 1, 10)));
}

#[tokio::test]
async fn torn_appends_are_skipped_by_every_reader() {
    let dir = tempfile::tempdir().expect("dir");
    let a = open(dir.path(), FsOptions::default());
    let b = open(dir.path(), FsOptions::default());
    create(a.as_ref(), &seg(1), body("a", 1, 50))
        .await
        .expect("1");
    // b knows the journal as it is now.
    assert!(get(b.as_ref(), &seg(1)).await.is_some());
    let magic = newest_magic(dir.path());
    // A torn append of segment 2 at the end: half of a valid entry.
    let torn = journal::encode(
        magic,
        EntryKind::Object,
        "segments/00000000000000000002.arrow",
        &body("dead", 2, 4000),
        1,
    )
    .expect("encode");
    append_raw(dir.path(), &torn[..torn.len() / 2]);
    // Nobody sees segment 2: the torn entry could still be being written.
    assert_eq!(get(b.as_ref(), &seg(2)).await, None);
    // The next append goes after it, wins 2, and every reader finds it.
    create(a.as_ref(), &seg(2), body("a", 2, 60))
        .await
        .expect("2");
    assert_eq!(get(b.as_ref(), &seg(2)).await, Some(body("a", 2, 60)));
    let c = open(dir.path(), FsOptions::default());
    assert_eq!(get(c.as_ref(), &seg(2)).await, Some(body("a", 2, 60)));
    // A torn append whose header was cut, then more appends.
    append_raw(dir.path(), &torn[..10]);
    create(b.as_ref(), &seg(3), body("b", 3, 70))
        .await
        .expect("3");
    for s in [&a, &b, &c] {
        assert_eq!(get(s.as_ref(), &seg(3)).await, Some(body("b", 3, 70)));
    }
    assert_eq!(listed(c.as_ref(), "segments").await.len(), 3);
}

#[tokio::test]
async fn a_torn_entry_that_claims_more_than_follows_is_skipped() {
    // The torn entry's header says 1 MiB; only a few bytes of it were written before the next
    // append. A reader must not wait for the megabyte.
    let dir = tempfile::tempdir().expect("dir");
    let a = open(dir.path(), FsOptions::default());
    create(a.as_ref(), &seg(1), body("a", 1, 10))
        .await
        .expect("1");
    let reader = open(dir.path(), FsOptions::default());
    assert!(get(reader.as_ref(), &seg(1)).await.is_some());
    let magic = newest_magic(dir.path());
    let big = journal::encode(
        magic,
        EntryKind::Object,
        "segments/00000000000000000002.arrow",
        &body("dead", 2, 1 << 20),
        1,
    )
    .expect("encode");
    append_raw(dir.path(), &big[..4096]);
    create(a.as_ref(), &seg(2), body("a", 2, 10))
        .await
        .expect("2");
    create(a.as_ref(), &seg(3), body("a", 3, 10))
        .await
        .expect("3");
    assert_eq!(get(reader.as_ref(), &seg(3)).await, Some(body("a", 3, 10)));
    assert_eq!(get(reader.as_ref(), &seg(2)).await, Some(body("a", 2, 10)));
}

#[tokio::test]
async fn a_later_claim_of_a_number_is_void() {
    // A paused process that resumes and appends a claim for a number someone else took:
    // every reader keeps the first.
    let dir = tempfile::tempdir().expect("dir");
    let a = open(dir.path(), FsOptions::default());
    create(a.as_ref(), &seg(1), body("first", 1, 10))
        .await
        .expect("1");
    let magic = newest_magic(dir.path());
    let late = journal::encode(
        magic,
        EntryKind::Object,
        "segments/00000000000000000001.arrow",
        &body("late", 1, 10),
        1,
    )
    .expect("encode");
    append_raw(dir.path(), &late);
    let b = open(dir.path(), FsOptions::default());
    for s in [&a, &b] {
        assert_eq!(get(s.as_ref(), &seg(1)).await, Some(body("first", 1, 10)));
    }
}

#[tokio::test]
async fn sealed_files_get_indexes_and_are_removed_once_empty() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = FsOptions {
        roll_bytes: 4 << 10,
        inline_max: 4 << 20,
    };
    let w = open(dir.path(), opts);
    for n in 1..=40 {
        create(w.as_ref(), &seg(n), body("w", n, 500))
            .await
            .expect("create");
    }
    let wals = journal_files(dir.path(), "wal");
    let idxs = journal_files(dir.path(), "idx");
    assert!(wals.len() >= 4, "{wals:?}");
    assert_eq!(idxs.len(), wals.len() - 1, "every sealed file has an index");
    // A fresh handle reads the indexes, not the files: break a sealed file's bytes after its
    // header and it still finds every segment's place (the bytes are checked on read).
    let reader = open(dir.path(), opts);
    for n in 1..=40 {
        assert_eq!(get(reader.as_ref(), &seg(n)).await, Some(body("w", n, 500)));
    }
    // An index that does not belong to its file is ignored: the file is scanned.
    let first_idx = &idxs[0];
    let saved = std::fs::read(first_idx).expect("idx");
    std::fs::write(
        first_idx,
        b"{\"version\":1,\"file\":99,\"entry_magic\":1,\"entries\":[]}",
    )
    .expect("write");
    let scanner = open(dir.path(), opts);
    for n in 1..=40 {
        assert_eq!(
            get(scanner.as_ref(), &seg(n)).await,
            Some(body("w", n, 500))
        );
    }
    std::fs::write(first_idx, saved).expect("restore");
    // Delete everything: sealed files go, the newest file stays.
    let other = open(dir.path(), opts);
    assert!(get(other.as_ref(), &seg(1)).await.is_some());
    for n in 1..=40 {
        w.delete(&seg(n)).await.expect("delete");
    }
    let left = journal_files(dir.path(), "wal");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(journal_files(dir.path(), "idx").len(), 0);
    assert!(listed(w.as_ref(), "segments").await.is_empty());
    create(w.as_ref(), &seg(41), body("w", 41, 5))
        .await
        .expect("41");
    assert_eq!(get(other.as_ref(), &seg(41)).await, Some(body("w", 41, 5)));
}

#[tokio::test]
async fn large_segments_are_files_named_by_the_journal() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = FsOptions {
        roll_bytes: 64 << 20,
        inline_max: 1000,
    };
    let w = open(dir.path(), opts);
    create(w.as_ref(), &seg(1), body("big", 1, 5000))
        .await
        .expect("big");
    create(w.as_ref(), &seg(2), body("small", 2, 10))
        .await
        .expect("small");
    let lost = create(w.as_ref(), &seg(1), body("big2", 1, 5000)).await;
    assert!(matches!(
        lost,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    let files: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .expect("segments dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files.len(), 1, "one file, the loser's removed: {files:?}");
    assert!(files[0].starts_with("00000000000000000001.") && files[0].ends_with(".arrow"));
    let r = open(dir.path(), opts);
    assert_eq!(get(r.as_ref(), &seg(1)).await, Some(body("big", 1, 5000)));
    assert_eq!(
        listed(r.as_ref(), "segments").await,
        vec![seg(1).to_string(), seg(2).to_string()],
        "the file is listed as its segment"
    );
    // A file the journal does not name (a writer died before its entry) is listed as itself,
    // so garbage collection can delete it.
    std::fs::write(
        dir.path()
            .join("segments/00000000000000000009.0123abcd.arrow"),
        b"orphan",
    )
    .expect("orphan");
    let names = listed(r.as_ref(), "segments").await;
    assert!(names.contains(&"segments/00000000000000000009.0123abcd.arrow".to_string()));
    r.delete(&Path::from("segments/00000000000000000009.0123abcd.arrow"))
        .await
        .expect("delete orphan");
    r.delete(&seg(1)).await.expect("delete big");
    assert_eq!(
        std::fs::read_dir(dir.path().join("segments"))
            .expect("dir")
            .count(),
        0
    );
}

#[tokio::test]
async fn stores_written_before_the_journal_keep_their_segment_files() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("segments")).expect("dir");
    for n in 1..=3u64 {
        std::fs::write(
            dir.path().join(format!("segments/{n:020}.arrow")),
            body("old", n, 20),
        )
        .expect("write");
    }
    let s = open(dir.path(), FsOptions::default());
    assert_eq!(get(s.as_ref(), &seg(2)).await, Some(body("old", 2, 20)));
    let taken = create(s.as_ref(), &seg(3), body("new", 3, 20)).await;
    assert!(matches!(
        taken,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    create(s.as_ref(), &seg(4), body("new", 4, 20))
        .await
        .expect("4");
    assert_eq!(listed(s.as_ref(), "segments").await.len(), 4);
    s.delete(&seg(1)).await.expect("delete old");
    assert!(
        !dir.path()
            .join("segments/00000000000000000001.arrow")
            .exists()
    );
}

#[tokio::test]
async fn each_tenant_has_its_own_journal() {
    let dir = tempfile::tempdir().expect("dir");
    let s = open(dir.path(), FsOptions::default());
    let t = Path::from("tenants/acme/segments/00000000000000000001.arrow");
    create(s.as_ref(), &seg(1), body("root", 1, 10))
        .await
        .expect("root");
    create(s.as_ref(), &t, body("acme", 1, 10))
        .await
        .expect("acme");
    assert!(dir.path().join("tenants/acme/journal").is_dir());
    assert_eq!(get(s.as_ref(), &t).await, Some(body("acme", 1, 10)));
    assert_eq!(
        listed(s.as_ref(), "tenants/acme/segments").await,
        vec![t.to_string()]
    );
    assert_eq!(
        listed(s.as_ref(), "segments").await,
        vec![seg(1).to_string()]
    );
    // Through a prefix, as the log opens a tenant.
    let prefixed = object_store::prefix::PrefixStore::new(s.clone(), Path::from("tenants/acme"));
    assert_eq!(get(&prefixed, &seg(1)).await, Some(body("acme", 1, 10)));
    let dirs = prefixed
        .list_with_delimiter(None)
        .await
        .expect("list")
        .common_prefixes;
    assert_eq!(
        dirs,
        vec![Path::from("segments")],
        "the journal folder is not listed"
    );
}

/// The child of [`kill_9_mid_append_leaves_a_readable_journal`]: append until killed.
#[tokio::test]
async fn child_appends_until_killed() {
    let Ok(root) = std::env::var("WHARF_FS_CHILD_DIR") else {
        return;
    };
    let s = open(
        FsPath::new(&root),
        FsOptions {
            roll_bytes: 256 << 10,
            inline_max: 4 << 20,
        },
    );
    let mut n = 1u64;
    loop {
        // Large bodies, so that a kill lands inside a write now and then.
        match create(s.as_ref(), &seg(n), body("child", n, 64 << 10)).await {
            Ok(()) => println!("{n}"),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        n += 1;
    }
}

#[test]
fn kill_9_mid_append_leaves_a_readable_journal() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let exe = std::env::current_exe().expect("exe");
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args(["child_appends_until_killed", "--exact", "--nocapture"])
            .env("WHARF_FS_CHILD_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        for line in out.lines() {
            let line = line.expect("line");
            if let Ok(n) = line.trim().parse::<u64>() {
                acked.push(n);
                if acked.len() >= 40 * (round + 1) {
                    break;
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // The next child starts over at 1: it finds every number up to the head taken.
    }
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let r = open(dir.path(), FsOptions::default());
        for n in &acked {
            let got = get(r.as_ref(), &seg(*n)).await;
            assert_eq!(got, Some(body("child", *n, 64 << 10)), "acknowledged {n}");
        }
        // After the kills, appends go on and are read back.
        let head = listed(r.as_ref(), "segments").await.len() as u64;
        create(r.as_ref(), &seg(head + 100), body("after", head + 100, 10))
            .await
            .expect("append after kills");
        let fresh = open(dir.path(), FsOptions::default());
        assert_eq!(
            get(fresh.as_ref(), &seg(head + 100)).await,
            Some(body("after", head + 100, 10))
        );
    });
}
