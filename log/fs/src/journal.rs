//! One log's journal: the numbered files under `<log root>/journal/`, appended to with
//! `O_APPEND` by any number of processes, and this process's index of the segments they hold.
//!
//! Every call here does blocking file I/O; [`crate::FsStore`] runs them on tokio's blocking
//! pool. The index is behind one mutex: appends hold it while they write (microseconds, the
//! bytes go to the page cache), never while they `fdatasync`.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, IoSlice, Seek, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;
use wharf_log_format::journal::{
    self, ENTRY_HEADER_LEN, EntryKind, External, FILE_HEADER_LEN, FileHeader, FileIndex,
    MAX_KEY_LEN, Parsed,
};

use crate::FsOptions;

/// How often a process looks for journal files that others deleted (so that it closes them and
/// the disk space is freed).
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Where a segment's bytes are.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    /// Offset of the entry's body in its file.
    at: u64,
    len: u32,
    crc: u32,
    pub created_ms: i64,
    /// The bytes are in a file of their own (the body names it).
    external: Option<External>,
    deleted: bool,
}

impl Claim {
    pub(crate) fn size(&self) -> u64 {
        match &self.external {
            Some(x) => x.len,
            None => self.len as u64,
        }
    }
}

/// A segment found in the journal: its bytes' location, for reading outside the lock.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub file: u64,
    fd: Arc<File>,
    pub claim: Claim,
}

struct JFile {
    number: u64,
    fd: Arc<File>,
    magic: u64,
    /// A seal entry was found: nothing after it counts.
    sealed: bool,
    /// Every entry before this position is indexed.
    scanned_to: u64,
    /// An entry at this position could not be read yet (being written, or torn with nothing
    /// after it), as of this file size: no need to look again until the file grows.
    stuck: Option<(u64, u64)>,
    /// The first claim of each segment in this file (before the seal).
    claims: BTreeMap<u64, Claim>,
    /// Claims that win (no earlier file has their segment) and are not deleted.
    live: usize,
}

struct State {
    loaded: bool,
    /// The highest segment number with a file of its own from before the journal (read once,
    /// when the journal is first used; such stores get no new ones).
    legacy_max: Option<u64>,
    files: BTreeMap<u64, JFile>,
    last_prune: Option<Instant>,
}

/// What this process last made durable, and what it wrote since.
#[derive(Default)]
struct Synced {
    file: u64,
    upto: u64,
}

pub(crate) struct Journal {
    /// `<log root>/journal`.
    dir: PathBuf,
    /// `<log root>/segments`: external segments, and the files of stores written before the
    /// journal.
    segments_dir: PathBuf,
    opts: FsOptions,
    state: Mutex<State>,
    synced: Mutex<Synced>,
    /// The end of the last append of this process: (file, position).
    written: Mutex<(u64, u64)>,
}

/// Where a segment is.
#[derive(Debug)]
pub(crate) enum Lookup {
    Journal(Found),
    /// Not in the journal; a store written before it may have it as a file.
    Legacy,
    Missing,
}

/// What an append found.
#[derive(Debug)]
pub(crate) enum Appended {
    /// The segment is ours, durable.
    Created,
    /// The segment exists already (someone else's, or ours from an attempt whose answer was
    /// lost — the caller compares bytes).
    Exists,
}

pub(crate) fn segment_key(seq: u64) -> String {
    format!("segments/{seq:020}.arrow")
}

/// The segment number of a key `segments/<20 digits>.arrow`.
pub(crate) fn segment_of(key: &str) -> Option<u64> {
    let name = key.strip_prefix("segments/")?;
    let digits = name.strip_suffix(".arrow")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn corrupt(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn read_exact_at(fd: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    fd.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// Up to `len` bytes at `at` (fewer at the end of the file).
fn read_at_most(fd: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match fd.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    pub(crate) fn new(root: &Path, opts: FsOptions) -> Self {
        Self {
            dir: root.join("journal"),
            segments_dir: root.join("segments"),
            opts,
            state: Mutex::new(State {
                loaded: false,
                legacy_max: None,
                files: BTreeMap::new(),
                last_prune: None,
            }),
            synced: Mutex::new(Synced::default()),
            written: Mutex::new((0, 0)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wal_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:020}.wal"))
    }

    fn idx_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:020}.idx"))
    }

    /// The plain file a segment of a store written before the journal has.
    pub(crate) fn legacy_path(&self, seq: u64) -> PathBuf {
        self.segments_dir.join(format!("{seq:020}.arrow"))
    }

    /// Append segment `seq` (create-only). `body` is the segment, or for a large one the
    /// external entry naming the file that already holds it (written and synced).
    pub(crate) fn append(&self, seq: u64, body: &[u8], external: bool) -> io::Result<Appended> {
        let key = segment_key(seq);
        let kind = if external {
            EntryKind::External
        } else {
            EntryKind::Object
        };
        let crc = journal::checksum(body);
        let created_ms = now_ms();
        let (file, fd, end, result) = {
            let mut st = self.state();
            self.refresh(&mut st)?;
            if let Some(fd) = taken(&st, seq) {
                drop(st);
                // Whatever we report as existing must be durable (the caller may act on it).
                fd.sync_data()?;
                return Ok(Appended::Exists);
            }
            if st.legacy_max.is_some_and(|m| seq <= m) && self.legacy_path(seq).exists() {
                return Ok(Appended::Exists);
            }
            loop {
                if taken(&st, seq).is_some() {
                    return Ok(Appended::Exists);
                }
                let number = self.current(&mut st)?;
                let f = st
                    .files
                    .get_mut(&number)
                    .ok_or_else(|| io::Error::other("journal file vanished while appending"))?;
                let head =
                    journal::encode_head_with_crc(f.magic, kind, &key, body.len(), crc, created_ms)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let total = head.len() + body.len();
                let written = loop {
                    match (&*f.fd).write_vectored(&[IoSlice::new(&head), IoSlice::new(body)]) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other?,
                    }
                };
                if written != total {
                    // A torn entry: readers skip it. Nothing more may be written for it (the
                    // rest would land after someone else's append).
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short append to the journal ({written} of {total} bytes)"),
                    ));
                }
                let end = (&*f.fd).stream_position()?;
                let start = end - total as u64;
                // Everything before our entry is final: index it (a torn entry there is
                // skipped, an entry that runs past our start is torn).
                let found = self.scan(f, start, true)?;
                let sealed = f.sealed;
                if !sealed {
                    f.scanned_to = end;
                    f.stuck = None;
                }
                let fd = f.fd.clone();
                add_claims(&mut st, number, found);
                if sealed {
                    // Our entry came after the seal: void. Append again to the next file.
                    continue;
                }
                *self.written.lock().unwrap_or_else(|p| p.into_inner()) = (number, end);
                let file = number;
                if taken(&st, seq).is_some() {
                    // Someone claimed it between our look and our append: ours is void.
                    break (file, fd, end, Appended::Exists);
                }
                let claim = Claim {
                    at: start + (ENTRY_HEADER_LEN + key.len()) as u64,
                    len: body.len() as u32,
                    crc,
                    created_ms,
                    external: if external {
                        Some(External::decode(body).map_err(|e| corrupt(e.to_string()))?)
                    } else {
                        None
                    },
                    deleted: false,
                };
                add_claims(&mut st, file, vec![(seq, claim)]);
                if end >= self.opts.roll_bytes {
                    self.seal(&mut st, file)?;
                }
                break (file, fd, end, Appended::Created);
            }
        };
        self.sync(file, &fd, end)?;
        Ok(result)
    }

    /// Make everything written to file `file` up to `end` durable, sharing one `fdatasync`
    /// among the appends of this process that wait for it.
    fn sync(&self, file: u64, fd: &File, end: u64) -> io::Result<()> {
        let mut s = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if s.file > file || (s.file == file && s.upto >= end) {
            return Ok(());
        }
        let target = *self.written.lock().unwrap_or_else(|p| p.into_inner());
        fd.sync_data()?;
        let covered = if target.0 == file {
            target.1.max(end)
        } else {
            end
        };
        if (file, covered) > (s.file, s.upto) {
            s.file = file;
            s.upto = covered;
        }
        Ok(())
    }

    /// Where segment `seq` is.
    pub(crate) fn find(&self, seq: u64) -> io::Result<Lookup> {
        let mut st = self.state();
        if let Some(found) = find(&st, seq) {
            return Ok(Lookup::Journal(found));
        }
        self.refresh(&mut st)?;
        Ok(match find(&st, seq) {
            Some(found) => Lookup::Journal(found),
            None if st.legacy_max.is_some_and(|m| seq <= m) => Lookup::Legacy,
            None => Lookup::Missing,
        })
    }

    /// Read a found segment's bytes, checked against its entry.
    pub(crate) fn read(&self, found: &Found) -> io::Result<Bytes> {
        let c = &found.claim;
        match &c.external {
            None => {
                let bytes = read_exact_at(&found.fd, c.at, c.len as usize)?;
                if journal::checksum(&bytes) != c.crc {
                    return Err(corrupt(format!(
                        "journal file {}: segment bytes at {} fail their checksum",
                        found.file, c.at
                    )));
                }
                Ok(Bytes::from(bytes))
            }
            Some(x) => {
                let path = self.segments_dir.join(&x.file);
                let bytes = std::fs::read(&path)?;
                if !x.matches(&bytes) {
                    return Err(corrupt(format!(
                        "{}: does not match its journal entry",
                        path.display()
                    )));
                }
                Ok(Bytes::from(bytes))
            }
        }
    }

    /// Every segment the journal holds that is not deleted: (seq, claim).
    pub(crate) fn list(&self) -> io::Result<Vec<(u64, Claim)>> {
        let mut st = self.state();
        self.refresh(&mut st)?;
        self.prune(&mut st, true)?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for f in st.files.values() {
            for (seq, c) in &f.claims {
                if seen.insert(*seq) && !c.deleted {
                    out.push((*seq, c.clone()));
                }
            }
        }
        Ok(out)
    }

    /// The names of the external files the journal's segments live in (they are not listed
    /// as files of their own).
    pub(crate) fn external_files(&self) -> Vec<String> {
        let st = self.state();
        st.files
            .values()
            .flat_map(|f| f.claims.values())
            .filter_map(|c| c.external.as_ref().map(|x| x.file.clone()))
            .collect()
    }

    /// Delete segment `seq`: `false` if the journal does not have it. A journal file whose
    /// segments are all deleted is removed once it is sealed.
    pub(crate) fn delete(&self, seq: u64) -> io::Result<bool> {
        let mut st = self.state();
        if !st.loaded {
            self.refresh(&mut st)?;
        }
        let Some(found) = find(&st, seq) else {
            return Ok(false);
        };
        let Some(f) = st.files.get_mut(&found.file) else {
            return Ok(false);
        };
        if let Some(c) = f.claims.get_mut(&seq) {
            c.deleted = true;
            f.live = f.live.saturating_sub(1);
            if let Some(x) = &c.external {
                match std::fs::remove_file(self.segments_dir.join(&x.file)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let last = st.files.keys().next_back().copied();
        let doomed: Vec<u64> = st
            .files
            .values()
            .filter(|f| f.sealed && f.live == 0 && Some(f.number) != last)
            .map(|f| f.number)
            .collect();
        for n in doomed {
            // The index first: a file without its index is scanned, an index without its file
            // would be a dangling promise.
            for path in [self.idx_path(n), self.wal_path(n)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            st.files.remove(&n);
            tracing::debug!(
                file = n,
                "journal file removed: every segment in it is deleted"
            );
        }
        Ok(true)
    }

    /// Bring the index up to the end of the journal: load it on first use, then read what was
    /// appended since, following seals into the next files.
    fn refresh(&self, st: &mut State) -> io::Result<()> {
        if !st.loaded {
            self.load(st)?;
            st.loaded = true;
        }
        if st.files.is_empty() {
            // No journal yet when we last looked: another process may have started it.
            self.load(st)?;
        }
        loop {
            let Some((&last, _)) = st.files.iter().next_back() else {
                return Ok(());
            };
            let f = st
                .files
                .get_mut(&last)
                .ok_or_else(|| io::Error::other("no file"))?;
            let sealed = if f.sealed {
                true
            } else {
                let size = f.fd.metadata()?.len();
                let found = self.scan(f, size, false)?;
                let sealed = f.sealed;
                add_claims(st, last, found);
                sealed
            };
            if !sealed {
                break;
            }
            // Sealed: the series goes on in the next file, once someone created it.
            let next = last + 1;
            match self.open_file(next)? {
                Some(f) => {
                    st.files.insert(next, f);
                }
                None => break,
            }
        }
        self.prune(st, false)
    }

    /// Read the journal directory: each file's index if it has one, else the file itself.
    fn load(&self, st: &mut State) -> io::Result<()> {
        match std::fs::read_dir(&self.segments_dir) {
            Ok(entries) => {
                for e in entries {
                    let name = e?.file_name();
                    if let Some(seq) = segment_of(&format!("segments/{}", name.to_string_lossy())) {
                        st.legacy_max = st.legacy_max.max(Some(seq));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut numbers = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries {
                    let name = e?.file_name();
                    let name = name.to_string_lossy();
                    if let Some(n) = name.strip_suffix(".wal")
                        && n.len() == 20
                        && let Ok(n) = n.parse::<u64>()
                    {
                        numbers.push(n);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        numbers.sort_unstable();
        let last = numbers.last().copied();
        for n in numbers {
            let Some(mut f) = self.open_file(n)? else {
                continue;
            };
            if Some(n) != last
                && let Some(found) = self.load_index(&mut f)?
            {
                st.files.insert(n, f);
                add_claims(st, n, found);
                continue;
            }
            let size = f.fd.metadata()?.len();
            let found = self.scan(&mut f, size, false)?;
            if Some(n) != last && !f.sealed {
                // A later file exists only once this one was sealed (and the seal synced);
                // if the seal cannot be read, nothing after this file's readable end counts.
                tracing::warn!(
                    file = n,
                    "journal file has a successor but no readable seal"
                );
                f.sealed = true;
            }
            st.files.insert(n, f);
            add_claims(st, n, found);
            if let Some(f) = st.files.get(&n)
                && f.sealed
            {
                self.write_index(f);
            }
        }
        Ok(())
    }

    fn open_file(&self, n: u64) -> io::Result<Option<JFile>> {
        let fd = match OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.wal_path(n))
        {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let head = read_exact_at(&fd, 0, FILE_HEADER_LEN).map_err(|e| {
            corrupt(format!(
                "journal file {}: no header: {e}",
                self.wal_path(n).display()
            ))
        })?;
        let header = FileHeader::decode(&head)
            .map_err(|e| corrupt(format!("journal file {}: {e}", self.wal_path(n).display())))?;
        if header.number != n {
            return Err(corrupt(format!(
                "journal file {} says it is number {}",
                self.wal_path(n).display(),
                header.number
            )));
        }
        Ok(Some(JFile {
            number: n,
            fd: Arc::new(fd),
            magic: header.entry_magic,
            sealed: false,
            scanned_to: FILE_HEADER_LEN as u64,
            stuck: None,
            claims: BTreeMap::new(),
            live: 0,
        }))
    }

    /// Index entries of file `f` from where it stopped up to `limit`. With `fin` (the bytes up
    /// to `limit` are final: an entry of ours starts there) an entry that is not valid by then
    /// is torn; without, one that runs past `limit` may still be being written.
    fn scan(&self, f: &mut JFile, limit: u64, fin: bool) -> io::Result<Vec<(u64, Claim)>> {
        let mut found = Vec::new();
        while f.scanned_to < limit && !f.sealed {
            let pos = f.scanned_to;
            if !fin && f.stuck == Some((pos, limit)) {
                return Ok(found);
            }
            let want = ((limit - pos) as usize).min(ENTRY_HEADER_LEN + MAX_KEY_LEN);
            let head = read_at_most(&f.fd, pos, want)?;
            let entry = match journal::parse(&head, f.magic, false) {
                Parsed::Entry(e) if pos + e.len as u64 <= limit => {
                    let body = read_exact_at(&f.fd, pos + e.body_offset as u64, e.body_len)?;
                    journal::body_matches(&e, &body).then_some((e, body))
                }
                Parsed::Entry(_) | Parsed::Incomplete if !fin => {
                    // Being written, or torn: torn if a valid entry follows it.
                    if !self.resync(f, pos, limit)? {
                        f.stuck = Some((pos, limit));
                        return Ok(found);
                    }
                    continue;
                }
                _ => None,
            };
            let Some((e, body)) = entry else {
                // Torn (or not an entry at all): skip to the next valid entry.
                if !self.resync(f, pos, limit)? {
                    if fin {
                        f.scanned_to = limit;
                    } else {
                        f.stuck = Some((pos, limit));
                        return Ok(found);
                    }
                }
                continue;
            };
            f.scanned_to = pos + e.len as u64;
            f.stuck = None;
            match e.kind {
                EntryKind::Seal => f.sealed = true,
                EntryKind::Object | EntryKind::External => {
                    let Some(seq) = segment_of(&e.key) else {
                        continue;
                    };
                    let external = if e.kind == EntryKind::External {
                        match External::decode(&body) {
                            Ok(x) => Some(x),
                            Err(err) => {
                                tracing::warn!(file = f.number, pos, error = %err, "unreadable external entry skipped");
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    found.push((
                        seq,
                        Claim {
                            at: pos + e.body_offset as u64,
                            len: e.body_len as u32,
                            crc: e.body_crc,
                            created_ms: e.created_ms,
                            external,
                            deleted: false,
                        },
                    ));
                }
            }
        }
        Ok(found)
    }

    /// After a torn entry at `pos`: move to the next valid entry before `limit`, if any.
    fn resync(&self, f: &mut JFile, pos: u64, limit: u64) -> io::Result<bool> {
        let buf = read_at_most(&f.fd, pos, (limit - pos) as usize)?;
        match journal::resync(&buf, f.magic) {
            Some(skip) => {
                tracing::warn!(
                    file = f.number,
                    pos,
                    skipped = skip,
                    "torn journal entry skipped"
                );
                f.scanned_to = pos + skip as u64;
                f.stuck = None;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The number of the file appends go to, creating it if the series has none yet or the
    /// last one is sealed.
    fn current(&self, st: &mut State) -> io::Result<u64> {
        loop {
            let next = match st.files.iter().next_back() {
                Some((&n, f)) if !f.sealed => return Ok(n),
                Some((&n, _)) => n + 1,
                None => 1,
            };
            self.create_file(next)?;
            if let Some(f) = self.open_file(next)? {
                st.files.insert(next, f);
            }
            self.refresh(st)?;
        }
    }

    /// Create journal file `n` with its header (create-only: a staged file linked into place;
    /// if someone else created it first, theirs stands).
    fn create_file(&self, n: u64) -> io::Result<()> {
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir)?;
            if let Some(parent) = self.dir.parent() {
                fsync_dir(parent)?;
            }
        }
        let mut magic = 0;
        while magic == 0 {
            magic = uuid::Uuid::new_v4().as_u64_pair().0;
        }
        let header = FileHeader {
            number: n,
            entry_magic: magic,
            created_ms: now_ms(),
        };
        let staged = self
            .dir
            .join(format!("{n:020}.wal.{}.tmp", uuid::Uuid::new_v4().simple()));
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staged)?;
            file.write_all(&header.encode())?;
            file.sync_all()?;
        }
        let linked = std::fs::hard_link(&staged, self.wal_path(n));
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => fsync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Seal file `n` (full): append a seal, make it durable, then create the next file — in
    /// that order, so a file's successor exists only once its seal is durable. The first seal
    /// counts; ours may come after another's.
    fn seal(&self, st: &mut State, n: u64) -> io::Result<()> {
        let Some(f) = st.files.get_mut(&n) else {
            return Ok(());
        };
        let head = journal::encode_head(f.magic, EntryKind::Seal, "", &[], now_ms())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        (&*f.fd).write_all(&head)?;
        let end = (&*f.fd).stream_position()?;
        let found = self.scan(f, end, true)?;
        f.fd.sync_data()?;
        let sealed = f.sealed;
        add_claims(st, n, found);
        if !sealed {
            return Err(io::Error::other(
                "journal seal not found after appending it",
            ));
        }
        tracing::debug!(file = n, "journal file sealed");
        if let Some(f) = st.files.get(&n) {
            self.write_index(f);
        }
        self.create_file(n + 1)?;
        if let Some(next) = self.open_file(n + 1)? {
            st.files.insert(n + 1, next);
        }
        Ok(())
    }

    /// Write the index of a sealed file (best effort; create-only, so a concurrent writer of
    /// the same index is harmless).
    fn write_index(&self, f: &JFile) {
        let path = self.idx_path(f.number);
        if path.exists() {
            return;
        }
        let index = FileIndex {
            version: journal::VERSION,
            file: f.number,
            entry_magic: f.magic,
            entries: f
                .claims
                .iter()
                .map(|(seq, c)| {
                    let kind = if c.external.is_some() {
                        EntryKind::External
                    } else {
                        EntryKind::Object
                    };
                    (
                        segment_key(*seq),
                        kind as u8,
                        c.at,
                        c.len,
                        c.crc,
                        c.created_ms,
                    )
                })
                .collect(),
        };
        let staged = self.dir.join(format!(
            "{:020}.idx.{}.tmp",
            f.number,
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staged)?;
            file.write_all(&index.encode())?;
            file.sync_all()?;
            match std::fs::hard_link(&staged, &path) {
                Ok(()) => fsync_dir(&self.dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })();
        let _ = std::fs::remove_file(&staged);
        if let Err(e) = result {
            tracing::warn!(file = f.number, error = %e, "could not write a journal file index");
        }
    }

    /// Load a sealed file's index, if it has a valid one: its claims.
    fn load_index(&self, f: &mut JFile) -> io::Result<Option<Vec<(u64, Claim)>>> {
        let bytes = match std::fs::read(self.idx_path(f.number)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let index = match FileIndex::decode(&bytes) {
            Ok(i) if i.file == f.number && i.entry_magic == f.magic => i,
            Ok(_) => {
                tracing::warn!(file = f.number, "journal index of another file ignored");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(file = f.number, error = %e, "unreadable journal index ignored");
                return Ok(None);
            }
        };
        let mut found = Vec::new();
        for (key, kind, at, len, crc, created_ms) in index.entries {
            let Some(seq) = segment_of(&key) else {
                continue;
            };
            let external = if kind == EntryKind::External as u8 {
                let body = read_exact_at(&f.fd, at, len as usize)?;
                Some(External::decode(&body).map_err(|e| corrupt(e.to_string()))?)
            } else {
                None
            };
            found.push((
                seq,
                Claim {
                    at,
                    len,
                    crc,
                    created_ms,
                    external,
                    deleted: false,
                },
            ));
        }
        f.sealed = true;
        f.scanned_to = f.fd.metadata()?.len();
        Ok(Some(found))
    }

    /// Forget sealed files that another process deleted (their descriptors would keep the
    /// space), at most every [`PRUNE_EVERY`] unless `now`.
    fn prune(&self, st: &mut State, now: bool) -> io::Result<()> {
        if !now && st.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return Ok(());
        }
        st.last_prune = Some(Instant::now());
        let last = st.files.keys().next_back().copied();
        let gone: Vec<u64> = st
            .files
            .keys()
            .copied()
            .filter(|n| Some(*n) != last && !self.wal_path(*n).exists())
            .collect();
        for n in gone {
            st.files.remove(&n);
        }
        Ok(())
    }
}

/// The winning claim of segment `seq`: the first file (in number order) that has one.
fn find(st: &State, seq: u64) -> Option<Found> {
    let (f, c) = st
        .files
        .values()
        .find_map(|f| f.claims.get(&seq).map(|c| (f, c)))?;
    (!c.deleted).then(|| Found {
        file: f.number,
        fd: f.fd.clone(),
        claim: c.clone(),
    })
}

/// Whether segment `seq` was claimed (deleted or not: a number is never taken twice), and the
/// file that has it.
fn taken(st: &State, seq: u64) -> Option<Arc<File>> {
    st.files
        .values()
        .find(|f| f.claims.contains_key(&seq))
        .map(|f| f.fd.clone())
}

/// Index claims found in file `file`: the first claim of a segment in the journal wins, later
/// ones lost a create-only race and are void.
fn add_claims(st: &mut State, file: u64, claims: Vec<(u64, Claim)>) {
    for (seq, claim) in claims {
        let earlier = st
            .files
            .range(..file)
            .any(|(_, f)| f.claims.contains_key(&seq));
        if earlier {
            continue;
        }
        if let Some(f) = st.files.get_mut(&file)
            && !f.claims.contains_key(&seq)
        {
            f.claims.insert(seq, claim);
            f.live += 1;
        }
    }
}
