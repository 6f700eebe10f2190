//! The local filesystem's journal (format version 1): the create-only objects of a log that
//! are written most often — segments and batch objects — appended to one shared file instead
//! of a file each, so that a commit on the local filesystem costs one `write` and one
//! `fdatasync` rather than a new file, a hard link and two `fsync`s.
//!
//! A journal is a numbered series of files. Each starts with a 64-byte [`FileHeader`]; then
//! come entries, appended by any number of processes with `O_APPEND` (the kernel makes each
//! append atomic with respect to the others, so entries never interleave):
//!
//! ```text
//! entry  = header(36) key(key_len) body(body_len)
//! header = magic u64 | kind u8 | 0 u8 | key_len u16 | body_len u32 | created_ms i64
//!        | body_crc u32 | 0 u32 | header_crc u32          (little-endian)
//! ```
//!
//! - `magic` is the file's random entry magic (from its header), so bytes of a payload can
//!   never pass for an entry unless they also guess it; `header_crc` is CRC-32C over the first
//!   32 header bytes and the key, `body_crc` over the body.
//! - [`EntryKind::Object`]: the object `key` (relative to the log's root, e.g.
//!   `segments/00000000000000000042.arrow`) with `body` as its bytes. The **first** valid entry
//!   for a key, in file order, is the object; later ones lost a create-only race and are void.
//! - [`EntryKind::External`]: like `Object`, for an object too large to copy into the
//!   journal: the body is an [`External`] naming the file (beside where the object would be)
//!   that holds its bytes, written and synced before the entry.
//! - [`EntryKind::Seal`]: the file is full; the series continues in the next file, and every
//!   entry after the first seal is void.
//!
//! A sealed file gets an index ([`FileIndex`], JSON, `<n>.idx` beside it) listing its object
//! entries, so opening a journal reads the indexes of sealed files and scans only the open one.
//!
//! A process killed in the middle of an append may leave a *torn* entry (a prefix of one), and
//! the next append starts right after it. Readers recognise a torn entry (bad header CRC, or a
//! body CRC mismatch while later bytes exist) and find the next entry by looking for the magic
//! ([`resync`]). This module only parses and encodes; the I/O is in `wharf-log-fs`.

use crate::FormatError;

/// Bytes 0..8 of every journal file.
pub const FILE_MAGIC: [u8; 8] = *b"WHARFJNL";
/// The journal format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Length of the file header.
pub const FILE_HEADER_LEN: usize = 64;
/// Length of an entry's fixed header.
pub const ENTRY_HEADER_LEN: usize = 36;
/// Longest key an entry can hold.
pub const MAX_KEY_LEN: usize = 1024;

// Slicing-by-16: several times faster than a byte table on segment-sized bodies.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The header of one journal file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// The file's number in the series (1, 2, ...).
    pub number: u64,
    /// The first bytes of every entry in this file (random, never 0).
    pub entry_magic: u64,
    pub created_ms: i64,
}

impl FileHeader {
    /// `FILE_MAGIC | version u32 | 0 u32 | number u64 | entry_magic u64 | created_ms i64 |
    /// 0 (20 bytes) | crc u32` — CRC-32C of the first 60 bytes.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.entry_magic.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = CRC.checksum(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let corrupt = |d: &str| FormatError::corrupt("journal file header", d);
        if b.len() < FILE_HEADER_LEN {
            return Err(corrupt("shorter than 64 bytes"));
        }
        if b[0..8] != FILE_MAGIC {
            return Err(corrupt("not a Wharf journal file"));
        }
        let version = u32_at(b, 8);
        if version > VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "journal",
                found: version,
                supported: VERSION,
            });
        }
        if CRC.checksum(&b[0..60]) != u32_at(b, 60) {
            return Err(corrupt("checksum mismatch"));
        }
        let entry_magic = u64_at(b, 24);
        if entry_magic == 0 {
            return Err(corrupt("entry magic is 0"));
        }
        Ok(Self {
            number: u64_at(b, 16),
            entry_magic,
            created_ms: u64_at(b, 32) as i64,
        })
    }
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A create-only object: its key and bytes.
    Object = 1,
    /// The file is full: the series goes on in the next file.
    Seal = 2,
    /// A create-only object whose bytes are in a file of their own ([`External`]).
    External = 3,
}

/// The body of an [`EntryKind::External`] entry: `len u64 | crc u32 | file name (UTF-8)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    /// The file's name, in the directory the object's key names.
    pub file: String,
    /// Length and CRC-32C of the object's bytes (the file's content).
    pub len: u64,
    pub crc: u32,
}

impl External {
    pub fn new(file: String, bytes: &[u8]) -> Self {
        Self {
            file,
            len: bytes.len() as u64,
            crc: checksum(bytes),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(12 + self.file.len());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.crc.to_le_bytes());
        b.extend_from_slice(self.file.as_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let corrupt = |d: &str| FormatError::corrupt("journal external entry", d);
        if b.len() < 13 {
            return Err(corrupt("too short"));
        }
        let file = std::str::from_utf8(&b[12..]).map_err(|_| corrupt("file name not UTF-8"))?;
        if file.contains('/') || file.starts_with('.') {
            return Err(corrupt("file name leaves its directory"));
        }
        Ok(Self {
            file: file.to_string(),
            len: u64_at(b, 0),
            crc: u32_at(b, 8),
        })
    }

    /// Whether `bytes` are the object this entry names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() as u64 == self.len && checksum(bytes) == self.crc
    }
}

/// CRC-32C, as the journal uses it.
pub fn checksum(bytes: &[u8]) -> u32 {
    CRC.checksum(bytes)
}

/// The index of a sealed journal file (`<n>.idx`, JSON): every valid `Object` and `External`
/// entry before the seal, in file order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIndex {
    pub version: u32,
    /// The journal file's number and entry magic (an index of another file is refused).
    pub file: u64,
    pub entry_magic: u64,
    /// `[key, kind, body_offset, body_len, body_crc, created_ms]`; `body_offset` from the
    /// start of the file, `kind` 1 (object) or 3 (external).
    pub entries: Vec<(String, u8, u64, u32, u32, i64)>,
}

impl FileIndex {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        #[derive(serde::Deserialize)]
        struct V {
            version: u32,
        }
        let v: V =
            serde_json::from_slice(b).map_err(|e| FormatError::corrupt("journal file index", e))?;
        if v.version > VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "journal file index",
                found: v.version,
                supported: VERSION,
            });
        }
        serde_json::from_slice(b).map_err(|e| FormatError::corrupt("journal file index", e))
    }
}

/// One entry as found in a file: where it is and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub key: String,
    /// Where the body starts, relative to the start of the entry.
    pub body_offset: usize,
    pub body_len: usize,
    pub body_crc: u32,
    pub created_ms: i64,
    /// The entry's whole length (header, key and body).
    pub len: usize,
}

/// The result of parsing bytes that start where an entry should.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid entry. With [`parse`]`(.., check_body: false)` the body is not checked.
    Entry(Entry),
    /// Not enough bytes to tell: the entry may still be being written (or is torn, which only
    /// bytes written after it can show).
    Incomplete,
    /// Not a valid entry: a torn append, or not an entry boundary at all.
    Invalid,
}

/// Encode the header and key of an entry whose body is `body`; the entry is these bytes
/// followed by the body, written in one append.
pub fn encode_head(
    entry_magic: u64,
    kind: EntryKind,
    key: &str,
    body: &[u8],
    created_ms: i64,
) -> Result<Vec<u8>, FormatError> {
    encode_head_with_crc(
        entry_magic,
        kind,
        key,
        body.len(),
        checksum(body),
        created_ms,
    )
}

/// [`encode_head`] for a body whose length and CRC-32C ([`checksum`]) the caller has.
pub fn encode_head_with_crc(
    entry_magic: u64,
    kind: EntryKind,
    key: &str,
    body_len: usize,
    body_crc: u32,
    created_ms: i64,
) -> Result<Vec<u8>, FormatError> {
    if key.len() > MAX_KEY_LEN {
        return Err(FormatError::Invalid {
            what: "journal entry",
            detail: format!("key of {} bytes (at most {MAX_KEY_LEN})", key.len()),
        });
    }
    let body_len = u32::try_from(body_len).map_err(|_| FormatError::Invalid {
        what: "journal entry",
        detail: format!("body of {body_len} bytes (at most 4 GiB)"),
    })?;
    let mut b = Vec::with_capacity(ENTRY_HEADER_LEN + key.len());
    b.extend_from_slice(&entry_magic.to_le_bytes());
    b.push(kind as u8);
    b.push(0);
    b.extend_from_slice(&(key.len() as u16).to_le_bytes());
    b.extend_from_slice(&body_len.to_le_bytes());
    b.extend_from_slice(&created_ms.to_le_bytes());
    b.extend_from_slice(&body_crc.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let mut digest = CRC.digest();
    digest.update(&b[0..32]);
    digest.update(key.as_bytes());
    b.extend_from_slice(&digest.finalize().to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    Ok(b)
}

/// Encode a whole entry into one buffer (tests and small entries).
pub fn encode(
    entry_magic: u64,
    kind: EntryKind,
    key: &str,
    body: &[u8],
    created_ms: i64,
) -> Result<Vec<u8>, FormatError> {
    let mut b = encode_head(entry_magic, kind, key, body, created_ms)?;
    b.extend_from_slice(body);
    Ok(b)
}

/// Parse the entry at the start of `b` (which holds every byte known to follow it). With
/// `check_body` false only the header and key are checked — enough when a valid entry is
/// known to start right after this one (a torn append is always followed by the next
/// append's bytes, never by an entry boundary at its declared end).
pub fn parse(b: &[u8], entry_magic: u64, check_body: bool) -> Parsed {
    if b.len() < 8 {
        return Parsed::Incomplete;
    }
    if u64_at(b, 0) != entry_magic {
        return Parsed::Invalid;
    }
    if b.len() < ENTRY_HEADER_LEN {
        return Parsed::Incomplete;
    }
    let kind = match b[8] {
        1 => EntryKind::Object,
        2 => EntryKind::Seal,
        3 => EntryKind::External,
        _ => return Parsed::Invalid,
    };
    let key_len = u16::from_le_bytes([b[10], b[11]]) as usize;
    if key_len > MAX_KEY_LEN {
        return Parsed::Invalid;
    }
    let body_len = u32_at(b, 12) as usize;
    let created_ms = u64_at(b, 16) as i64;
    let body_crc = u32_at(b, 24);
    let head_end = ENTRY_HEADER_LEN + key_len;
    if b.len() < head_end {
        return Parsed::Incomplete;
    }
    let mut digest = CRC.digest();
    digest.update(&b[0..32]);
    digest.update(&b[ENTRY_HEADER_LEN..head_end]);
    if digest.finalize() != u32_at(b, 32) {
        return Parsed::Invalid;
    }
    let Ok(key) = std::str::from_utf8(&b[ENTRY_HEADER_LEN..head_end]) else {
        return Parsed::Invalid;
    };
    let len = head_end + body_len;
    if check_body {
        if b.len() < len {
            return Parsed::Incomplete;
        }
        if CRC.checksum(&b[head_end..len]) != body_crc {
            return Parsed::Invalid;
        }
    }
    Parsed::Entry(Entry {
        kind,
        key: key.to_string(),
        body_offset: head_end,
        body_len,
        body_crc,
        created_ms,
        len,
    })
}

/// Whether `body` is the body an entry declared.
pub fn body_matches(entry: &Entry, body: &[u8]) -> bool {
    body.len() == entry.body_len && CRC.checksum(body) == entry.body_crc
}

/// After an invalid entry at the start of `b`: the position of the next complete, valid entry
/// (body checked), if `b` holds one.
pub fn resync(b: &[u8], entry_magic: u64) -> Option<usize> {
    let magic = entry_magic.to_le_bytes();
    let mut from = 1;
    while from + 8 <= b.len() {
        let at = from + b[from..].windows(8).position(|w| w == magic)?;
        if let Parsed::Entry(_) = parse(&b[at..], entry_magic, true) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: u64 = 0x5eed_f00d_1234_5678;

    #[test]
    fn checksum_is_crc32c() {
        // The standard check value of CRC-32C (Castagnoli).
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn file_header_round_trips_and_refuses_damage() {
        let h = FileHeader {
            number: 7,
            entry_magic: M,
            created_ms: 1_795_000_000_000,
        };
        let b = h.encode();
        assert_eq!(FileHeader::decode(&b).expect("decodes"), h);
        let mut bad = b;
        bad[20] ^= 1;
        assert!(FileHeader::decode(&bad).is_err());
        let mut newer = b;
        newer[8] = 2;
        assert!(matches!(
            FileHeader::decode(&newer),
            Err(FormatError::UnsupportedVersion { found: 2, .. })
        ));
        assert!(FileHeader::decode(&b[..63]).is_err());
    }

    #[test]
    fn entry_round_trips() {
        let e = encode(M, EntryKind::Object, "segments/1.arrow", b"hello", 42).expect("enc");
        match parse(&e, M, true) {
            Parsed::Entry(entry) => {
                assert_eq!(entry.kind, EntryKind::Object);
                assert_eq!(entry.key, "segments/1.arrow");
                assert_eq!(entry.created_ms, 42);
                assert_eq!(entry.len, e.len());
                assert_eq!(
                    &e[entry.body_offset..entry.body_offset + entry.body_len],
                    b"hello"
                );
                assert!(body_matches(&entry, b"hello"));
                assert!(!body_matches(&entry, b"hellO"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefixes_are_incomplete_and_damage_is_invalid() {
        let e = encode(M, EntryKind::Object, "k", b"0123456789", 1).expect("enc");
        for cut in 0..e.len() {
            assert_eq!(parse(&e[..cut], M, true), Parsed::Incomplete, "cut {cut}");
        }
        // Another magic, a flipped header bit, a flipped body bit.
        assert_eq!(parse(&e, M + 1, true), Parsed::Invalid);
        let mut h = e.clone();
        h[13] ^= 1;
        assert_eq!(parse(&h, M, true), Parsed::Invalid);
        let mut body = e.clone();
        let last = body.len() - 1;
        body[last] ^= 1;
        assert_eq!(parse(&body, M, true), Parsed::Invalid);
        // Without the body check the damaged body still parses (its end is known).
        assert!(matches!(parse(&body, M, false), Parsed::Entry(_)));
    }

    #[test]
    fn external_and_index_round_trip() {
        let x = External::new("00000000000000000042.1f2e.arrow".into(), b"big bytes");
        let b = x.encode();
        assert_eq!(External::decode(&b).expect("decodes"), x);
        assert!(x.matches(b"big bytes"));
        assert!(!x.matches(b"big byteS"));
        let mut escape = External::new("../x".into(), b"").encode();
        assert!(External::decode(&escape).is_err());
        escape.truncate(5);
        assert!(External::decode(&escape).is_err());
        let idx = FileIndex {
            version: VERSION,
            file: 3,
            entry_magic: M,
            entries: vec![("segments/1.arrow".into(), 1, 100, 5, 77, 9)],
        };
        assert_eq!(FileIndex::decode(&idx.encode()).expect("decodes"), idx);
        let newer = br#"{"version":2,"file":3,"entry_magic":1,"entries":[]}"#;
        assert!(matches!(
            FileIndex::decode(newer),
            Err(FormatError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn resync_finds_the_entry_after_a_torn_one() {
        let a = encode(M, EntryKind::Object, "a", &[7u8; 300], 1).expect("enc");
        let b = encode(M, EntryKind::Object, "b", b"second", 2).expect("enc");
        // A torn append: the first 100 bytes of `a`, then `b` right after.
        let mut file = a[..100].to_vec();
        file.extend_from_slice(&b);
        // Shorter than `a` says it is: it could still be being written.
        assert_eq!(parse(&file, M, true), Parsed::Incomplete);
        assert_eq!(resync(&file, M), Some(100));
        // A torn append whose header was cut.
        let mut file = a[..20].to_vec();
        file.extend_from_slice(&b);
        assert_eq!(resync(&file, M), Some(20));
        // Nothing after it: nothing found.
        assert_eq!(resync(&a[..100], M), None);
    }

    #[test]
    fn a_payload_that_imitates_an_entry_needs_the_magic() {
        // Someone publishes a payload holding a well-formed entry under another magic.
        let forged = encode(M + 1, EntryKind::Object, "segments/9.arrow", b"evil", 1).expect("enc");
        let carrier = encode(M, EntryKind::Object, "a", &forged, 1).expect("enc");
        let after = encode(M, EntryKind::Object, "b", b"ok", 2).expect("enc");
        let mut file = carrier[..carrier.len() - 3].to_vec();
        let torn_len = file.len();
        file.extend_from_slice(&after);
        assert_eq!(resync(&file, M), Some(torn_len));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), check in any::<bool>()) {
            let _ = parse(&bytes, M, check);
            let _ = resync(&bytes, M);
            let _ = FileHeader::decode(&bytes);
        }

        #[test]
        fn every_cut_of_a_stream_of_entries_parses_back(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
            tear in any::<proptest::sample::Index>(),
        ) {
            // Entries appended one after the other, one of them torn at a random length.
            let torn = tear.index(bodies.len());
            let mut file = Vec::new();
            let mut expected = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                let e = encode(M, EntryKind::Object, &format!("k{i}"), body, i as i64).expect("enc");
                if i == torn && i + 1 < bodies.len() {
                    file.extend_from_slice(&e[..e.len() / 2]);
                } else {
                    expected.push(format!("k{i}"));
                    file.extend_from_slice(&e);
                }
            }
            let mut found = Vec::new();
            let mut at = 0;
            while at < file.len() {
                match parse(&file[at..], M, true) {
                    Parsed::Entry(e) => {
                        found.push(e.key.clone());
                        at += e.len;
                    }
                    Parsed::Incomplete | Parsed::Invalid => match resync(&file[at..], M) {
                        Some(skip) => at += skip,
                        None => break,
                    },
                }
            }
            prop_assert_eq!(found, expected);
        }
    }
}
