//! The two byte pumps of a relay (customer -> node and node -> customer), and the read
//! of the node's reply. Every byte is paid for from the key's account before it goes on.

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use turbo_proto::wire::relay::{RelayReply, MAX_REPLY_MESSAGE};

use super::counters::Counters;
use super::RelayError;
use crate::pool::BufPool;
use crate::quic::stream::RelayStream;

/// Reads the node's [`RelayReply`]; returns it with any payload that followed it and
/// whether the stream already finished.
pub(super) async fn read_reply(
    rs: &RelayStream,
) -> Result<(RelayReply, Vec<u8>, bool), RelayError> {
    let mut acc = Vec::with_capacity(64);
    let mut buf = [0u8; 1024];
    loop {
        let (n, fin) = rs.recv(&mut buf).await?;
        acc.extend_from_slice(&buf[..n]);
        if let Some((reply, used)) = RelayReply::decode(&acc)? {
            return Ok((reply, acc.split_off(used), fin));
        }
        if fin || acc.len() > MAX_REPLY_MESSAGE + 16 {
            return Err(RelayError::NoReply);
        }
    }
}

/// Customer -> node: read only when the stream has credit, so a slow node throttles the
/// customer through TCP instead of growing our buffers. What was read is paid for before
/// it is forwarded; bytes the key cannot pay for are never sent, and the pump stops.
pub(super) async fn pump_up(
    rs: &RelayStream,
    rd: &mut OwnedReadHalf<TcpStream>,
    pool: &BufPool,
    counters: &Counters<'_>,
) -> Result<(), RelayError> {
    loop {
        monoio::select! {
            r = rs.writable() => r?,
            _ = counters.halted() => return Ok(()),
        }
        let (res, buf) = monoio::select! {
            r = rd.read(pool.empty()) => r,
            _ = counters.halted() => return Ok(()),
        };
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                pool.put(buf);
                return Err(e.into());
            }
        };
        if n == 0 {
            pool.put(buf);
            rs.send_all(&[], true).await?;
            return Ok(());
        }
        let (paid, exhausted) = counters.account.pay(n).await;
        if paid > 0 {
            counters.add_up(paid);
            let sent = rs.send_all(&buf[..paid], false).await;
            if let Err(e) = sent {
                pool.put(buf);
                return Err(e.into());
            }
        }
        pool.put(buf);
        if let Some(why) = exhausted {
            counters.halt(why);
            return Ok(());
        }
    }
}

/// Node -> customer: read from the stream only after the previous write finished, so a
/// slow customer throttles the node through QUIC flow control. What was read is paid for
/// before it is written; bytes the key cannot pay for are never delivered, and the pump
/// stops.
pub(super) async fn pump_down(
    rs: &RelayStream,
    wr: &mut OwnedWriteHalf<TcpStream>,
    pool: &BufPool,
    counters: &Counters<'_>,
) -> Result<(), RelayError> {
    loop {
        let mut buf = pool.full();
        let received = monoio::select! {
            r = rs.recv(&mut buf) => Some(r),
            _ = counters.halted() => None,
        };
        let Some(received) = received else {
            pool.put(buf);
            return Ok(());
        };
        let (n, fin) = match received {
            Ok(r) => r,
            Err(e) => {
                pool.put(buf);
                return Err(e.into());
            }
        };
        if n > 0 {
            let (paid, exhausted) = counters.account.pay(n).await;
            if paid > 0 {
                counters.add_down(paid);
                buf.truncate(paid);
                let (res, buf) = wr.write_all(buf).await;
                pool.put(buf);
                res?;
            } else {
                pool.put(buf);
            }
            if let Some(why) = exhausted {
                counters.halt(why);
                return Ok(());
            }
        } else {
            pool.put(buf);
        }
        if fin {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}
