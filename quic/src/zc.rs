//! The buffers quiche keeps for outgoing stream data: [`bytes::Bytes`], so a buffer read
//! from a TCP socket can be handed to quiche as it is
//! ([`crate::stream::Stream::send_owned`]) and freed once the peer acknowledged it.

use bytes::Bytes;

/// quiche's buffer factory for both ends: stream data in [`Bytes`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ZcFactory;

impl quiche::BufFactory for ZcFactory {
    type Buf = Bytes;
    type DgramBuf = Vec<u8>;

    fn buf_from_slice(buf: &[u8]) -> Bytes {
        Bytes::copy_from_slice(buf)
    }

    fn dgram_buf_from_slice(buf: &[u8]) -> Vec<u8> {
        buf.to_vec()
    }
}

/// A QUIC connection of either end.
pub type QuicConn = quiche::Connection<ZcFactory>;
