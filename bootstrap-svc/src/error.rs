//! The bootstrap service's errors and their one mapping to gRPC status codes.

use std::sync::Arc;

use tonic::{Code, Status};

/// What broke underneath a storage error; shared, so one failed group
/// commit can answer every request in it with the same cause.
pub type StorageFault = Arc<dyn std::error::Error + Send + Sync>;

/// Everything a bootstrap request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing, oversized or malformed; names the field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// A signature is required (`--require-signatures`) but none was given.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this to that registration: wrong key, bad
    /// signature, stale or replayed timestamp, or not the registrant.
    #[error("{0}")]
    PermissionDenied(String),
    /// The client exceeded its request rate.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is shutting down.
    #[error("the bootstrap server is shutting down; retry against another one")]
    ShuttingDown,
    /// The store failed earlier (a full disk) and is being reopened; the
    /// request was not applied. Retry shortly, or against another server.
    #[error("{0}")]
    StoreDown(String),
    /// The registration changed under the request too many times in a row
    /// (concurrent writers on a shared store); nothing was applied.
    #[error("{0}")]
    Contended(String),
    /// The registry store failed; the request was not applied. The cause
    /// is the source.
    #[error("storage error: {0}")]
    Storage(#[source] StorageFault),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::InvalidArgument { field, reason: reason.to_string() }
    }

    /// A storage error with a cause of its own.
    pub(crate) fn storage(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage(Arc::new(cause))
    }

    /// A storage error known only by its description.
    pub(crate) fn storage_msg(what: impl Into<String>) -> Self {
        Error::storage(std::io::Error::other(what.into()))
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::storage(e)
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::ShuttingDown | Error::StoreDown(_) => Code::Unavailable,
            Error::Contended(_) => Code::Aborted,
            Error::Storage(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_their_cause() {
        let e = Error::from(redb::StorageError::Io(std::io::Error::other("disk full")));
        let source = std::error::Error::source(&e).expect("the redb error is the source");
        assert!(source.to_string().contains("disk full"), "{source}");
        assert_eq!(Status::from(e).code(), Code::Internal);
    }
}
