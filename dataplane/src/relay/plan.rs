//! What a relay carries from the customer's core to the node's: the plan (who pays,
//! where to, which node, what to answer), the customer socket with it, and the ways a
//! relay ends early. Shared by the relay's parts; it imports none of them.

use std::sync::Arc;
use std::time::Instant;

use tracing::Span;
use turbo_proto::http_body::{BodyEnd, BodyError, ResponseEnd};
use turbo_proto::wire::WireError;
use turbo_proto::{RelayStatus, TargetAddr};

use crate::account::Exhausted;
use crate::control::{AuthGrant, NodeRoute};
use crate::fairshare::ShareRefusal;
use crate::frontend::ReplyKind;
use crate::quic::stream::StreamError;

/// A target failure one node answered, waiting for another node's answer.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    /// The node that answered it.
    pub(super) node_id: Arc<str>,
    /// What it answered.
    pub(super) status: RelayStatus,
}

/// Everything a relay needs besides the customer socket.
pub(crate) struct RelayPlan {
    /// How to answer the customer.
    pub(crate) reply: ReplyKind,
    /// Where to connect.
    pub(crate) target: TargetAddr,
    /// Bytes to send upstream once the node connected.
    pub(crate) pending: Vec<u8>,
    /// Plain HTTP: where the request's body ends; the customer's bytes after it are
    /// never forwarded (one request per connection).
    pub(crate) body: Option<BodyEnd>,
    /// Plain HTTP: follows the target's response, to end the relay once it is complete.
    pub(crate) response: Option<ResponseEnd>,
    /// Who pays.
    pub(crate) grant: AuthGrant,
    /// Which node connection carries it.
    pub(crate) route: NodeRoute,
    /// Nodes that already failed this request.
    pub(crate) tried: Vec<Arc<str>>,
    /// The sticky session moved to a new node.
    pub(crate) moved: bool,
    /// A target failure waiting for another node's answer.
    pub(crate) challenge: Option<Challenge>,
    /// The customer connection's span.
    pub(crate) span: Span,
    /// When the customer connected.
    pub(crate) started: Instant,
    /// The connection's places in the server, listener and key counts, given back
    /// when the relay ends (on whichever core).
    pub(crate) _slots: (crate::limits::ConnSlot, crate::limits::KeySlot),
}

/// A customer connection ready to be relayed.
pub(crate) struct RelayJob<S> {
    /// The customer socket.
    pub(crate) stream: S,
    /// The rest.
    pub(crate) plan: RelayPlan,
}

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// The QUIC stream or connection failed.
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// The customer socket failed (reset, broken pipe).
    #[error("customer io: {0}")]
    Customer(#[from] std::io::Error),
    /// The node's reply was malformed.
    #[error("bad reply from node: {0}")]
    Protocol(#[from] WireError),
    /// The node finished the stream without a reply.
    #[error("node sent no reply")]
    NoReply,
    /// The key cannot pay for more bytes.
    #[error("credit: {0}")]
    Credit(#[from] Exhausted),
    /// No byte moved either way for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(std::time::Duration),
    /// One direction held bytes it could not pass on for the stall timeout.
    #[error("stalled: {0}")]
    Stalled(Stalled),
    /// The plain-HTTP request body or response was malformed chunked coding.
    #[error("http body: {0}")]
    Body(#[from] BodyError),
}

/// Which side stopped taking bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stalled {
    /// The customer stopped reading what its target sent.
    #[error("customer_stalled: the customer read nothing for the stall timeout")]
    Customer,
    /// The node stopped accepting upstream bytes or reporting their delivery.
    #[error("node_stalled: the node accepted or delivered nothing for the stall timeout")]
    Node,
}

impl<S> RelayJob<S> {
    /// The same job with its socket converted.
    pub(crate) fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> RelayJob<T> {
        RelayJob {
            stream: f(self.stream),
            plan: self.plan,
        }
    }
}

impl<T, E> RelayJob<Result<T, E>> {
    /// Lifts a failed socket conversion out of the job.
    pub(crate) fn transpose(self) -> Result<RelayJob<T>, E> {
        Ok(RelayJob {
            stream: self.stream?,
            plan: self.plan,
        })
    }
}

/// Why one attempt on one node opened no tunnel. Each maps to the reply code the
/// customer gets ([`AttemptError::status`]); the text is the `Proxy-Status` detail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// The node's connection is no longer on this core.
    #[error("node disconnected")]
    NodeDisconnected,
    /// The key already holds its share of this node's streams.
    #[error("{0}")]
    Share(ShareRefusal),
    /// No stream could be opened or written (connection full or closed).
    #[error("{0}")]
    Stream(#[from] StreamError),
    /// The node's reply could not be read.
    #[error("{0}")]
    Reply(RelayError),
    /// The node owes a reply by the connect timeout (its own Timeout at the latest):
    /// silence past it is the node's fault.
    #[error("node did not answer in time")]
    ReplyTimeout,
    /// The node answered with a failure (the target refused, DNS failed, policy...).
    #[error("{message}")]
    Refused {
        /// The node's status.
        status: RelayStatus,
        /// The node's message.
        message: String,
    },
}

impl AttemptError {
    /// The reply code this failure gives the customer (and the retry logic).
    pub(crate) fn status(&self) -> RelayStatus {
        match self {
            AttemptError::Share(why) => why.status(),
            AttemptError::Stream(StreamError::NoCapacity) => RelayStatus::NodeOverloaded,
            AttemptError::Refused { status, .. } => *status,
            AttemptError::NodeDisconnected
            | AttemptError::Stream(_)
            | AttemptError::Reply(_)
            | AttemptError::ReplyTimeout => RelayStatus::NodeGone,
        }
    }
}
