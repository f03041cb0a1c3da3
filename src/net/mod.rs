//! Sockets: options every connection gets, and reading whole messages during the startup
//! phases (before the relay takes over a connection's buffers).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// Sets TCP_NODELAY (the proxy batches writes itself) and keepalive (`0` disables it).
pub fn configure(stream: &TcpStream, keepalive: Duration) {
    let _ = stream.set_nodelay(true);
    if !keepalive.is_zero() {
        let ka = socket2::TcpKeepalive::new()
            .with_time(keepalive)
            .with_interval(Duration::from_secs(keepalive.as_secs().clamp(1, 10)));
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
    }
}

/// Reads until `buf` holds at least `n` bytes. EOF first is `UnexpectedEof`. Cancel safe:
/// bytes read stay in `buf`.
pub async fn fill_to<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    n: usize,
) -> io::Result<()> {
    while buf.len() < n {
        buf.reserve(n - buf.len());
        if r.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Reads one typed message whole into `buf` (which may already hold bytes) and splits it off:
/// returns (tag, frame). `limit` bounds the frame length.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<(u8, BytesMut)> {
    fill_to(r, buf, crate::protocol::HEADER_LEN).await?;
    let header = crate::protocol::Header::peek(buf, limit)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .expect("five bytes present");
    fill_to(r, buf, header.frame_len).await?;
    Ok((header.tag, buf.split_to(header.frame_len)))
}
