//! The node's errors, by cause, and their one mapping to gRPC status codes.

use tonic::{Code, Status};

use crate::chain::tx::TxError;
use crate::chain::{BlockError, StoreError};
use crate::mempool::SubmitError;
use crate::mempool::pool::Refused;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block broke a validity rule (the text names it).
    #[error("invalid block: {0}")]
    InvalidBlock(#[from] BlockError),
    /// A transaction was refused (the text names the rule).
    #[error(transparent)]
    Transaction(#[from] SubmitError),
    /// A request field is missing, oversized or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The caller (a node id, or an address) is banned for misbehaviour.
    #[error("{peer} is banned for misbehaving (invalid blocks or answers); try again later")]
    Banned { peer: String },
    /// The other side is on another network (its genesis differs).
    #[error("different network: our genesis is {ours}, yours is {theirs}")]
    WrongNetwork { ours: String, theirs: String },
    /// A peer we depended on failed or broke off (a sync source, a stream).
    #[error("peer {peer}: {reason}")]
    PeerUnavailable { peer: String, reason: String },
    /// The request cannot be served in the node's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The chain store failed; the underlying error is the source.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// What was asked for is not here (a block by hash).
    #[error("{0}")]
    NotFound(String),
    /// A bound on what one party may hold was reached (streams, buffered bytes, a mining job).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A peer or client went silent for longer than allowed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A task the request depended on died.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Whether a peer's answer is its [`Error::WrongNetwork`] refusal (the
    /// status this type maps it to), so the caller drops rather than retries.
    pub(crate) fn is_wrong_network(status: &Status) -> bool {
        status.code() == Code::FailedPrecondition && status.message().starts_with("different network:")
    }

    pub(crate) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::InvalidArgument { field, reason: reason.to_string() }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            // Early blocks are our clock's problem as much as the sender's.
            Error::InvalidBlock(BlockError::FromTheFuture { .. }) => Code::FailedPrecondition,
            Error::InvalidBlock(_) | Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::Transaction(e) => submit_code(e),
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::NotFound(_) => Code::NotFound,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Banned { .. } => Code::PermissionDenied,
            Error::WrongNetwork { .. } | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PeerUnavailable { .. } => Code::Unavailable,
            Error::Storage(StoreError::WrongNetwork { .. }) => Code::FailedPrecondition,
            Error::Storage(StoreError::Down) => Code::Unavailable,
            Error::Storage(_) | Error::Internal(_) => Code::Internal,
            Error::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

/// Each transaction rule has its own code, so a client can tell a bad
/// signature from a replay from an oversized payload without parsing text.
fn submit_code(e: &SubmitError) -> Code {
    match e {
        SubmitError::Invalid(TxError::TooLarge { .. }) => Code::OutOfRange,
        SubmitError::Invalid(TxError::BadSignature { .. } | TxError::BadSender(_)) => Code::InvalidArgument,
        SubmitError::Refused(Refused::Stale { .. } | Refused::Duplicate(_)) | SubmitError::Confirmed(_) => {
            Code::AlreadyExists
        }
        SubmitError::Refused(Refused::NonceTaken { .. }) => Code::FailedPrecondition,
        SubmitError::Refused(Refused::SenderFull { .. } | Refused::TooLarge { .. }) => Code::ResourceExhausted,
        SubmitError::Storage(StoreError::Down) | SubmitError::ShuttingDown => Code::Unavailable,
        SubmitError::Storage(_) => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_their_cause() {
        let io = redb::StorageError::Io(std::io::Error::other("disk full"));
        let e = Error::from(StoreError::from(io));
        let source = std::error::Error::source(&e).expect("the redb error is the source");
        assert!(source.to_string().contains("disk full"), "{source}");
        assert_eq!(Status::from(e).code(), Code::Internal);
    }

    #[test]
    fn each_cause_has_its_code() {
        let cases = [
            (Error::Banned { peer: "a:1".into() }, Code::PermissionDenied),
            (Error::WrongNetwork { ours: "a".into(), theirs: "b".into() }, Code::FailedPrecondition),
            (Error::PeerUnavailable { peer: "p:1".into(), reason: "gone".into() }, Code::Unavailable),
            (Error::invalid("block", "is required"), Code::InvalidArgument),
            (Error::ShuttingDown, Code::Unavailable),
            (Error::ResourceExhausted("busy".into()), Code::ResourceExhausted),
            (Error::NotFound("no such block".into()), Code::NotFound),
            (Error::DeadlineExceeded("silent".into()), Code::DeadlineExceeded),
            (
                Error::InvalidBlock(BlockError::FromTheFuture { ts: 2, ahead_ms: 1, max_ms: 0 }),
                Code::FailedPrecondition,
            ),
            (Error::from(SubmitError::Invalid(TxError::TooLarge { len: 2, max: 1 })), Code::OutOfRange),
            (Error::from(SubmitError::Invalid(TxError::BadSignature { sender: "s".into() })), Code::InvalidArgument),
            (
                Error::from(SubmitError::Refused(Refused::Stale { sender: "s".into(), nonce: 1, last: 1 })),
                Code::AlreadyExists,
            ),
            (
                Error::from(SubmitError::Refused(Refused::SenderFull { sender: "s".into(), max: 1 })),
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
    }
}
