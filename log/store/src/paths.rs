//! Object keys. The layout is documented in `log/README.md`; keep the two in step.

use object_store::path::Path;
use wharf_log_format::StreamId;

/// Width of the zero-padded numbers in keys, so that keys sort in number order.
const WIDTH: usize = 20;

pub(crate) fn number(n: u64) -> String {
    format!("{n:0WIDTH$}")
}

/// Parse the number from the last part of a numbered key (`.../00000000000000000042.json`).
pub(crate) fn parse_number(path: &Path) -> Option<u64> {
    let file = path.filename()?;
    let stem = file.split('.').next()?;
    (stem.len() == WIDTH).then(|| stem.parse().ok()).flatten()
}

pub(crate) fn segment(seq: u64) -> Path {
    Path::from(format!("segments/{}.arrow", number(seq)))
}

pub(crate) fn segments_dir() -> Path {
    Path::from("segments")
}

/// Batch `n` of writer `writer` (a name only that writer writes).
pub(crate) fn batch(writer: &str, n: u64) -> Path {
    Path::from(format!("batches/{writer}/{}.arrow", number(n)))
}

pub(crate) fn batches_dir() -> Path {
    Path::from("batches")
}

pub(crate) fn checkpoints_dir() -> Path {
    Path::from("checkpoints")
}

pub(crate) fn checkpoint(seq: u64) -> Path {
    Path::from(format!("checkpoints/{}.json", number(seq)))
}

pub(crate) fn cursors_dir(stream: &StreamId) -> Path {
    Path::from(format!("cursors/{stream}"))
}

pub(crate) fn cursor_dir(stream: &StreamId, name: &str) -> Path {
    Path::from(format!("cursors/{stream}/{name}"))
}

pub(crate) fn lease_dir(name: &str) -> Path {
    Path::from(format!("leases/{name}"))
}

pub(crate) fn catalog_kind_dir(kind: &str) -> Path {
    Path::from(format!("catalog/{kind}"))
}

pub(crate) fn catalog_dir(kind: &str, name: &str) -> Path {
    Path::from(format!("catalog/{kind}/{name}"))
}

pub(crate) fn tenants_dir() -> Path {
    Path::from("tenants")
}

pub(crate) fn tenant_dir(name: &str) -> Path {
    Path::from(format!("tenants/{name}"))
}

pub(crate) fn numbered(dir: &Path, n: u64) -> Path {
    dir.clone().join(format!("{}.json", number(n)))
}

pub(crate) fn probe(id: &str) -> Path {
    Path::from(format!("probe/{id}"))
}
