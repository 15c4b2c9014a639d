//! The node's errors and their one mapping to gRPC status codes.

use tonic::{Code, Status};

use crate::chain::{BlockError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block broke a validity rule (the text names it).
    #[error("invalid block: {0}")]
    InvalidBlock(#[from] BlockError),
    /// A request field is missing, oversized or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The request cannot be served in the node's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller is banned for misbehaviour.
    #[error("{0}")]
    PermissionDenied(String),
    /// The chain store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A task the request depended on died.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::InvalidArgument { field, reason: reason.to_string() }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidBlock(_) | Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Store(_) | Error::Internal(_) => Code::Internal,
            Error::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}
