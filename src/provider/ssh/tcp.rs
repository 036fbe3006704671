//! The TCP stream under an SSH connection: Nagle's algorithm off and every segment acknowledged
//! at once (Linux's `TCP_QUICKACK`, set again after every read since the kernel drops it).
//!
//! Without both, a small packet of one side can wait for the other side's delayed ACK, 40 ms on
//! Linux, whenever an earlier packet of the first side is not acknowledged yet. An SSH server
//! keeps Nagle on for sessions without a terminal (OpenSSH does), so after it sends a packet
//! the client does not answer (its host keys, say), its next one (the confirmation of a
//! channel) waits for the client's ACK: on loopback that was 43 ms of a 95 ms connection.
//!
//! Used by `session`; depends on tokio and socket2 only.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that acknowledges what it reads at once (see the module).
#[derive(Debug)]
pub(super) struct QuickAck(TcpStream);

impl QuickAck {
    /// Connects to `address:port` with Nagle's algorithm off.
    ///
    /// # Errors
    /// The address does not resolve, or nothing accepts the connection.
    pub(super) async fn connect(address: &str, port: u16) -> std::io::Result<QuickAck> {
        let stream = TcpStream::connect((address, port)).await?;
        // Where the option is refused, the connection only loses the speed-up.
        let _ = stream.set_nodelay(true);
        quick_ack(&stream);
        Ok(QuickAck(stream))
    }
}

/// Asks the kernel to acknowledge the next segments at once. Where it cannot (another system,
/// a socket option refused), the stream only loses the speed-up.
fn quick_ack(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

impl AsyncRead for QuickAck {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) {
            quick_ack(&self.0);
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
