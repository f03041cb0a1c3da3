//! Sockets: options every connection gets, the plain-or-TLS stream type, TLS materials, and
//! reading whole messages during the startup phases (before the relay takes over a
//! connection's buffers).

mod client_cert;
mod end_point;
pub mod fd_limit;
pub mod host_name;
pub mod interfaces;
pub mod listener;
pub mod server_addr;
mod stream;
pub mod tls;

pub use client_cert::ClientCert;
pub use stream::Stream;

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Binds a listening socket as `TcpListener::bind` does (SO_REUSEADDR, a backlog of 1024),
/// with SO_REUSEPORT when `reuse_port`: then several processes share the address, and the
/// kernel spreads new connections among those listening.
pub fn listen(addr: std::net::SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

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

/// [`configure`] for a server connection, plus TCP_USER_TIMEOUT of the keepalive time: data
/// sent to a server that stops acknowledging it (a partition that drops an established flow
/// while new connections still work) fails the connection then, instead of after the
/// kernel's retransmissions (about 15 minutes). A long query is not affected (the server's
/// kernel acknowledges what it received).
pub fn configure_server(stream: &TcpStream, keepalive: Duration) {
    configure(stream, keepalive);
    if !keepalive.is_zero() {
        let _ = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(keepalive));
    }
}

/// The name of the operating-system user `uid` (`peer` authentication), from the password
/// database.
pub fn os_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length it is given) and sets
    // `found` to `&pwd` or null; `pw_name` then points into `buf`, read before it is dropped.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The id of the group named `name` (the group database, as `getgrnam`); `None` when there
/// is no such group.
pub fn os_group_id(name: &str) -> io::Result<Option<u32>> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: getgrnam_r writes only into `grp` and `buf` (whose length it is given) and
        // sets `found` to `&grp` or null; only `gr_gid`, a plain integer, is read.
        let (rc, gid) = unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            );
            (rc, (!found.is_null()).then_some(grp.gr_gid))
        };
        match rc {
            0 => return Ok(gid),
            // A group with many members: its entry needs more room.
            libc::ERANGE if buf.len() < 1 << 24 => buf.resize(buf.len() * 4, 0),
            // "Not found" as glibc may report it.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Writes all of `data` and flushes it (TLS holds back what the socket did not take).
pub async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
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

/// Reads a connection's first packet whole (bounded as a client's startup packet is) within
/// `limit`, and parses it. `None` when it does not arrive in time or is not a valid one.
/// Reading it whole also keeps a reply from being lost to a reset over unread bytes.
pub async fn read_initial<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: Duration,
) -> Option<crate::protocol::startup::Initial> {
    use crate::protocol::startup;
    let mut buf = BytesMut::new();
    let read = tokio::time::timeout(limit, async {
        fill_to(r, &mut buf, 4).await?;
        let len = startup::declared_len([buf[0], buf[1], buf[2], buf[3]])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        fill_to(r, &mut buf, len).await?;
        Ok::<_, io::Error>(len)
    })
    .await;
    match read {
        Ok(Ok(len)) => startup::parse(&buf[..len]).ok(),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sockets_time_out_unacknowledged_data() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            configure_server(&s, Duration::from_secs(30));
            let r = socket2::SockRef::from(&s);
            assert_eq!(r.tcp_user_timeout().unwrap(), Some(Duration::from_secs(30)));
            assert!(r.keepalive().unwrap());
            assert!(r.tcp_nodelay().unwrap());
            let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            configure(&c, Duration::ZERO);
            let r = socket2::SockRef::from(&c);
            assert_eq!(r.tcp_user_timeout().unwrap(), None);
            assert!(!r.keepalive().unwrap());
        });
    }
}
