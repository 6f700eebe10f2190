use thiserror::Error;

/// A persisted object could not be decoded (or a value could not be encoded).
#[derive(Debug, Error)]
pub enum FormatError {
    /// The object declares a format version this build does not understand.
    #[error("unsupported {what} format version {found} (this build reads up to {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    /// The bytes are not a valid object of this kind.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A value was rejected before it could be persisted.
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl FormatError {
    pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        Self::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}
