use thiserror::Error;
use wharf_log_format::FormatError;

/// What a caller should do about a [`LogError`]: the small boundary kind that adapters map to
/// protocol codes (see `log/README.md`, "Failure model").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorKind {
    /// The store is unavailable or slow; the operation may be retried.
    Unavailable,
    /// Another holder owns this resource now; stop acting on it.
    Fenced,
    /// Someone else changed the object first; re-read and decide again.
    Conflict,
    /// The thing asked for does not exist.
    NotFound,
    /// The request itself is wrong (bad name, bad setting).
    Invalid,
    /// Stored data could not be decoded; needs an operator.
    Corrupt,
    /// The log handle was closed.
    Closed,
}

/// Errors of the log.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("object store error on {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("store {store} is unsafe for Wharf: {detail}")]
    UnsafeStore { store: String, detail: String },
    #[error("{what} {name} is held by another owner (epoch {theirs} > ours {ours})")]
    Fenced {
        what: &'static str,
        name: String,
        ours: u64,
        theirs: u64,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{path}: {source}")]
    Format {
        path: String,
        #[source]
        source: FormatError,
    },
    #[error("the log is closed")]
    Closed,
    /// A failure shared by every append of one flush.
    #[error("{message}")]
    Batch { kind: ErrorKind, message: String },
}

impl LogError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::Store { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => ErrorKind::Conflict,
                _ => ErrorKind::Unavailable,
            },
            LogError::UnsafeStore { .. } | LogError::Invalid { .. } => ErrorKind::Invalid,
            LogError::Fenced { .. } => ErrorKind::Fenced,
            LogError::Conflict(_) => ErrorKind::Conflict,
            LogError::NotFound(_) => ErrorKind::NotFound,
            LogError::Format { source, .. } => match source {
                FormatError::Invalid { .. } => ErrorKind::Invalid,
                _ => ErrorKind::Corrupt,
            },
            LogError::Closed => ErrorKind::Closed,
            LogError::Batch { kind, .. } => *kind,
        }
    }

    pub(crate) fn store(path: &object_store::path::Path, source: object_store::Error) -> Self {
        LogError::Store {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn format(path: &object_store::path::Path, source: FormatError) -> Self {
        LogError::Format {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl ToString) -> Self {
        LogError::Invalid {
            what,
            detail: detail.to_string(),
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
