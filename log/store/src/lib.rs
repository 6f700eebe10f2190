//! # wharf-log
//!
//! Wharf's log on object storage, over `Arc<dyn ObjectStore>`. Everything an adapter must not
//! lose lives here: stream records, consumer cursors, leases and the configuration catalog.
//!
//! Main types:
//! - [`Store`]: an object store opened from a URL (`file://`, `s3://`, `memory://`), with the
//!   start-up check that it honours put-if-absent ([`Store::verify_conditional_put`]).
//! - [`Log`]: append with group commit (many streams, one object per flush), read from an
//!   offset or a time, [`Tail`], retention. Many processes append at once without racing:
//!   the holder of the sequencer lease commits the numbered segments, the others put batch
//!   objects under their own names and are durable when those PUTs return ([`Pending`]);
//!   offsets follow when the batches are committed.
//! - [`Cursor`]: a durable consumer position with per-message acks, mergeable across processes
//!   and fenceable by a [`Lease`].
//! - [`Blocks`]: one stream read by competing processes, each taking blocks of offsets by
//!   lease and acknowledging in one shared cursor (queues, shared subscriptions).
//! - [`Catalog`]: configuration objects, listed and watched.
//!
//! The only coordination is create-only writes of numbered objects plus epochs (see
//! `log/README.md` for the layout, protocol, invariants and failure model).
//!
//! What it is not: no protocol types (MQTT/AMQP live in `adapters/`), no network listeners,
//! no consensus of its own.

mod blocks;
mod catalog;
mod clock;
mod compact;
mod cursor;
mod error;
mod gc;
mod lease;
mod log;
mod paths;
mod read;
mod sequencer;
mod series;
mod settings;
mod store;
mod writer;

pub mod metrics;

pub use blocks::{Blocks, MAX_BLOCKS};
pub use catalog::{Catalog, CatalogEvent, CatalogWatch};
pub use clock::{Clock, ManualClock, SystemClock};
pub use compact::CompactionReport;
pub use cursor::Cursor;
pub use error::{ErrorKind, LogError, Result};
pub use gc::GcReport;
pub use lease::Lease;
pub use log::{ClientGuard, Log, Pending};
pub use read::{Tail, Tails, pack_position, unpack_position};
pub use sequencer::SEQUENCER_LEASE;
pub use settings::{LogSettings, StoreKind};
pub use store::Store;
pub use wharf_log_format as format;
