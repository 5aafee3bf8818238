//! Control-stream messages between a node and the server.
//!
//! Frame layout: `type: u8 | length: varint | body`. A frame body is at most
//! [`MAX_CONTROL_FRAME`] bytes. Unknown frame types decode to
//! [`ControlMessage::Unknown`] and are skipped, so either side can add messages without
//! breaking an older peer. The version is negotiated in [`Hello`] / [`Welcome`].

use super::codec::{put_bytes, put_varint, split_frame, Reader};
use super::{WireError, WIRE_VERSION};

mod servers;
pub use servers::{ServerInfo, MAX_SERVERS, MAX_SERVER_ADDR, MAX_SERVER_ID};

/// Largest control frame body accepted.
pub const MAX_CONTROL_FRAME: usize = 4096;

/// The node's first message: who it is and what it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest wire version the node speaks.
    pub version: u8,
    /// The node token from the join string. Secret: never logged.
    pub token: String,
    /// Software name and version, for operators (`turbo-node/0.1.0`).
    pub agent: String,
    /// The country the runner declared (ISO 3166-1 alpha-2), if any.
    pub country: Option<String>,
    /// Where the runner wants to be paid, if set. Still decoded for compatibility, but
    /// the server ignores it: the payout address is set at invite time or through the
    /// API, so a hello can never redirect a node's earnings.
    pub payout_address: Option<String>,
    /// Most relay streams the node accepts at once.
    pub max_streams: u32,
    /// Which of the node's parallel connections this is; `None` from a node that opens
    /// one (older nodes send nothing here).
    pub lane: Option<Lane>,
}

/// One of several QUIC connections a node keeps to one server, one per server core, so
/// that each core relays over a connection of its own. The server treats the lanes of
/// one session as one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// Random per node run: lanes with the same session come from one daemon, and a
    /// hello with another session takes the node over (as a second daemon would).
    pub session: u64,
    /// The lane's index, `0..lanes` (from the [`Welcome`]); lane `k` aims at core `k`.
    pub index: u8,
}

/// The server's answer to an accepted [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Wire version chosen for this connection.
    pub version: u8,
    /// The node's identity as the server knows it.
    pub node_id: String,
    /// How often the node should ping, in milliseconds.
    pub ping_interval_ms: u64,
    /// After this long without hearing from the node the server drops it.
    pub liveness_timeout_ms: u64,
    /// How many connections (lanes) the node should keep: the server's core count, 1
    /// from servers that do not say.
    pub lanes: u8,
}

/// Why the server refused a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectCode {
    /// The token is unknown or revoked.
    BadToken = 1,
    /// No common wire version.
    Version = 2,
    /// The server is draining or full.
    Unavailable = 3,
    /// The hello was malformed or came too late.
    Protocol = 4,
    /// Sent as the close code only: a newer connection with the same node token took
    /// over (the node must not reconnect and take it back).
    Replaced = 5,
    /// Another node already runs on this network (public IPv4 address or IPv6 /64):
    /// the server admits `nodes_per_network` per network. Retried with backoff.
    NetworkTaken = 6,
}

impl RejectCode {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => RejectCode::BadToken,
            2 => RejectCode::Version,
            3 => RejectCode::Unavailable,
            4 => RejectCode::Protocol,
            5 => RejectCode::Replaced,
            6 => RejectCode::NetworkTaken,
            other => {
                return Err(WireError::UnknownValue {
                    field: "reject code",
                    value: other.into(),
                })
            }
        })
    }
}

/// Counters the node reports about itself (informational: billing counts on the server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Relay streams open right now.
    pub active_streams: u64,
    /// Relay streams accepted since the node started.
    pub total_streams: u64,
    /// Bytes received from targets.
    pub bytes_from_targets: u64,
    /// Bytes sent to targets.
    pub bytes_to_targets: u64,
}

/// Destination rules the server pushes to a node; they only add refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePolicy {
    /// Ports to refuse.
    pub ports: Vec<u16>,
    /// CIDR ranges to refuse (text, e.g. `203.0.113.0/24`).
    pub nets: Vec<String>,
    /// Domains to refuse, with their subdomains.
    pub domains: Vec<String>,
}

/// Most entries in each list of a [`NodePolicy`].
pub const MAX_POLICY_ENTRIES: usize = 64;

/// One control-stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Node -> server, first message.
    Hello(Hello),
    /// Server -> node, hello accepted.
    Welcome(Welcome),
    /// Server -> node, hello refused; the server closes the connection next.
    Reject {
        /// Why.
        code: RejectCode,
        /// Human-readable detail.
        message: String,
    },
    /// Liveness probe, either direction.
    Ping {
        /// Echoed in the pong.
        seq: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's sequence number.
        seq: u64,
    },
    /// Node -> server counters.
    Stats(NodeStats),
    /// The sender is going away: no new relay streams; open ones may finish within
    /// `grace_ms`.
    Drain {
        /// Grace period in milliseconds.
        grace_ms: u64,
    },
    /// Server -> node, after the welcome: extra destination rules.
    Policy(NodePolicy),
    /// Server -> node: the node's current score as the server computes it, × 1000.
    Score {
        /// Score × 1000 (0..=1000).
        milli: u32,
    },
    /// Node -> server: how many bytes of relay stream `stream` the node has written to
    /// the target so far (`done` once that direction ended). The server bills upstream
    /// bytes as they are reported here, never more than it sent, and stops sending to a
    /// stream that runs too far ahead of its reports.
    Delivered {
        /// The relay stream's id.
        stream: u64,
        /// Bytes written to the target since the stream opened (monotonic).
        bytes: u64,
        /// No more bytes will be written to the target on this stream.
        done: bool,
    },
    /// Server -> node: what the node earned as the server's ledger reports it, in
    /// nano-USD (today's is an estimate until the day's rewards are posted).
    Earnings {
        /// Today (UTC) so far.
        today_nano: u64,
        /// This month (UTC), today included.
        month_nano: u64,
    },
    /// Server -> node: the node's earnings are held (not paid out) for `reason`, as
    /// an operator or a failed canary decided; an empty reason lifts a hold told
    /// before.
    Held {
        /// Why, for the runner (at most 256 bytes); empty when no longer held.
        reason: String,
    },
    /// Server -> node, after the welcome and whenever it changes: the network's live
    /// servers (this one included), so that the node keeps connections to two of them.
    Servers(Vec<ServerInfo>),
    /// A frame type this build does not know; skipped.
    Unknown {
        /// The frame type byte.
        kind: u8,
    },
}

const T_HELLO: u8 = 1;
const T_WELCOME: u8 = 2;
const T_REJECT: u8 = 3;
const T_PING: u8 = 4;
const T_PONG: u8 = 5;
const T_STATS: u8 = 6;
const T_DRAIN: u8 = 7;
const T_POLICY: u8 = 8;
const T_SCORE: u8 = 9;
const T_DELIVERED: u8 = 10;
const T_EARNINGS: u8 = 11;
const T_HELD: u8 = 12;
const T_SERVERS: u8 = 13;

impl ControlMessage {
    /// Appends the framed message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64);
        let kind = match self {
            ControlMessage::Hello(h) => {
                h.put(&mut body);
                T_HELLO
            }
            ControlMessage::Welcome(w) => {
                w.put(&mut body);
                T_WELCOME
            }
            ControlMessage::Reject { code, message } => {
                body.push(*code as u8);
                put_bytes(&mut body, message.as_bytes());
                T_REJECT
            }
            ControlMessage::Ping { seq } => {
                put_varint(&mut body, *seq);
                T_PING
            }
            ControlMessage::Pong { seq } => {
                put_varint(&mut body, *seq);
                T_PONG
            }
            ControlMessage::Stats(s) => {
                s.put(&mut body);
                T_STATS
            }
            ControlMessage::Drain { grace_ms } => {
                put_varint(&mut body, *grace_ms);
                T_DRAIN
            }
            ControlMessage::Policy(p) => {
                p.put(&mut body);
                T_POLICY
            }
            ControlMessage::Score { milli } => {
                put_varint(&mut body, u64::from(*milli));
                T_SCORE
            }
            ControlMessage::Delivered {
                stream,
                bytes,
                done,
            } => {
                put_varint(&mut body, *stream);
                put_varint(&mut body, *bytes);
                body.push(u8::from(*done));
                T_DELIVERED
            }
            ControlMessage::Earnings {
                today_nano,
                month_nano,
            } => {
                put_varint(&mut body, *today_nano);
                put_varint(&mut body, *month_nano);
                T_EARNINGS
            }
            ControlMessage::Held { reason } => {
                put_bytes(&mut body, reason.as_bytes());
                T_HELD
            }
            ControlMessage::Servers(list) => {
                servers::put(list, &mut body);
                T_SERVERS
            }
            ControlMessage::Unknown { kind } => *kind,
        };
        out.push(kind);
        put_bytes(out, &body);
    }

    fn decode_body(kind: u8, body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let msg = match kind {
            T_HELLO => ControlMessage::Hello(Hello::read(&mut r)?),
            T_WELCOME => ControlMessage::Welcome(Welcome::read(&mut r)?),
            T_REJECT => ControlMessage::Reject {
                code: RejectCode::from_u8(r.u8("reject code")?)?,
                message: r.string("reject message", 256)?,
            },
            T_PING => ControlMessage::Ping {
                seq: r.varint("ping seq")?,
            },
            T_PONG => ControlMessage::Pong {
                seq: r.varint("pong seq")?,
            },
            T_STATS => ControlMessage::Stats(NodeStats::read(&mut r)?),
            T_DRAIN => ControlMessage::Drain {
                grace_ms: r.varint("grace")?,
            },
            T_POLICY => ControlMessage::Policy(NodePolicy::read(&mut r)?),
            T_SCORE => ControlMessage::Score {
                milli: r.varint("score")?.min(1000) as u32,
            },
            T_DELIVERED => ControlMessage::Delivered {
                stream: r.varint("delivered stream")?,
                bytes: r.varint("delivered bytes")?,
                done: read_done(&mut r)?,
            },
            T_EARNINGS => ControlMessage::Earnings {
                today_nano: r.varint("earnings today")?,
                month_nano: r.varint("earnings month")?,
            },
            T_HELD => ControlMessage::Held {
                reason: r.string("hold reason", 256)?,
            },
            T_SERVERS => ControlMessage::Servers(servers::read(&mut r)?),
            other => ControlMessage::Unknown { kind: other },
        };
        Ok(msg)
    }
}

impl Hello {
    fn put(&self, body: &mut Vec<u8>) {
        body.push(self.version);
        put_bytes(body, self.token.as_bytes());
        put_bytes(body, self.agent.as_bytes());
        put_bytes(body, self.country.as_deref().unwrap_or("").as_bytes());
        put_bytes(
            body,
            self.payout_address.as_deref().unwrap_or("").as_bytes(),
        );
        put_varint(body, self.max_streams.into());
        if let Some(lane) = self.lane {
            put_varint(body, lane.session);
            body.push(lane.index);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let version = r.u8("hello version")?;
        let token = r.string("token", 256)?;
        let agent = r.string("agent", 64)?;
        let country = non_empty(r.string("country", 2)?);
        let payout_address = non_empty(r.string("payout address", 128)?);
        let max_streams = r.varint("max streams")?.min(u32::MAX.into()) as u32;
        // Older nodes end the hello here.
        let lane = if r.remaining() > 0 {
            Some(Lane {
                session: r.varint("lane session")?,
                index: r.u8("lane index")?,
            })
        } else {
            None
        };
        Ok(Hello {
            version,
            token,
            agent,
            country,
            payout_address,
            max_streams,
            lane,
        })
    }
}

impl Welcome {
    fn put(&self, body: &mut Vec<u8>) {
        body.push(self.version);
        put_bytes(body, self.node_id.as_bytes());
        put_varint(body, self.ping_interval_ms);
        put_varint(body, self.liveness_timeout_ms);
        body.push(self.lanes);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let version = r.u8("welcome version")?;
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        Ok(Welcome {
            version,
            node_id: r.string("node id", 64)?,
            ping_interval_ms: r.varint("ping interval")?,
            liveness_timeout_ms: r.varint("liveness timeout")?,
            // Older servers end the welcome here: one lane.
            lanes: if r.remaining() > 0 {
                r.u8("lanes")?.max(1)
            } else {
                1
            },
        })
    }
}

impl NodeStats {
    fn put(&self, body: &mut Vec<u8>) {
        put_varint(body, self.active_streams);
        put_varint(body, self.total_streams);
        put_varint(body, self.bytes_from_targets);
        put_varint(body, self.bytes_to_targets);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(NodeStats {
            active_streams: r.varint("active streams")?,
            total_streams: r.varint("total streams")?,
            bytes_from_targets: r.varint("bytes from targets")?,
            bytes_to_targets: r.varint("bytes to targets")?,
        })
    }
}

impl NodePolicy {
    /// Each list is cut to [`MAX_POLICY_ENTRIES`].
    fn put(&self, body: &mut Vec<u8>) {
        let n = |len: usize| len.min(MAX_POLICY_ENTRIES);
        put_varint(body, n(self.ports.len()) as u64);
        for port in self.ports.iter().take(MAX_POLICY_ENTRIES) {
            put_varint(body, u64::from(*port));
        }
        for list in [&self.nets, &self.domains] {
            put_varint(body, n(list.len()) as u64);
            for item in list.iter().take(MAX_POLICY_ENTRIES) {
                put_bytes(body, item.as_bytes());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let count = |r: &mut Reader<'_>, field| -> Result<usize, WireError> {
            let n = r.varint(field)?;
            if n > MAX_POLICY_ENTRIES as u64 {
                return Err(WireError::UnknownValue { field, value: n });
            }
            Ok(n as usize)
        };
        let mut p = NodePolicy::default();
        for _ in 0..count(r, "policy ports")? {
            let port = r.varint("policy port")?;
            p.ports
                .push(u16::try_from(port).map_err(|_| WireError::UnknownValue {
                    field: "policy port",
                    value: port,
                })?);
        }
        for _ in 0..count(r, "policy nets")? {
            p.nets.push(r.string("policy net", 64)?);
        }
        for _ in 0..count(r, "policy domains")? {
            p.domains.push(r.string("policy domain", 253)?);
        }
        Ok(p)
    }
}

/// The `done` flag of a `Delivered`: 0 or 1, anything else refused.
fn read_done(r: &mut Reader<'_>) -> Result<bool, WireError> {
    match r.u8("delivered done")? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(WireError::UnknownValue {
            field: "delivered done",
            value: v.into(),
        }),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Incremental decoder for the control stream: push bytes as they arrive, pull
/// messages out. Holds at most one incomplete frame.
#[derive(Debug, Default)]
pub struct ControlDecoder {
    buf: Vec<u8>,
}

impl ControlDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Decodes the next complete message, if any.
    ///
    /// # Errors
    /// [`WireError`] for an oversized or malformed frame; the stream should then be
    /// closed, as the decoder's position is lost.
    pub fn next_message(&mut self) -> Result<Option<ControlMessage>, WireError> {
        let Some(&kind) = self.buf.first() else {
            return Ok(None);
        };
        let Some((body, used)) = split_frame(&self.buf[1..], "control frame", MAX_CONTROL_FRAME)?
        else {
            return Ok(None);
        };
        let msg = ControlMessage::decode_body(kind, body)?;
        self.buf.drain(..1 + used);
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests;
