//! The little HTTP/1.1 this generator needs, written by hand so that its own cost per
//! delivered event stays far below the server's: connect (from a spread of loopback
//! source addresses), read a response head, de-chunk a streaming body, read a
//! keep-alive publish response.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail, ensure};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses 127.0.0.2 ..= 127.0.0.(1 + SPREAD): each has its own ephemeral
/// port range, so tens of thousands of connections (and their TIME_WAITs) fit.
const SPREAD: usize = 60;

/// Connects to `addr`; to a loopback server, from a source address picked by `index`.
pub(crate) async fn connect(addr: SocketAddr, index: usize) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if addr.ip().is_loopback() {
        let last = u8::try_from(2 + index % SPREAD).expect("SPREAD < 254");
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) content_length: Option<usize>,
    pub(crate) chunked: bool,
}

/// Reads from `socket` into `buf` until a full head is there; returns the head and
/// leaves what follows it in `buf`.
pub(crate) async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Head> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end + 4);
            return Ok(head);
        }
        ensure!(buf.len() < 64 * 1024, "response head over 64 KiB");
        if read_more(socket, buf).await? == 0 {
            bail!("connection closed before the response head");
        }
    }
}

fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut parsed = Head {
        status,
        content_length: None,
        chunked: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Ok(parsed)
}

/// Reads one whole keep-alive response (head and body) and returns its status and body.
pub(crate) async fn read_response(socket: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
    let head = read_head(socket, buf).await?;
    let mut body = Vec::new();
    if head.chunked {
        let mut chunks = Dechunker::default();
        loop {
            let consumed = chunks.feed(buf, &mut body)?;
            buf.drain(..consumed);
            if chunks.finished {
                break;
            }
            ensure!(read_more(socket, buf).await? > 0, "connection closed in a chunked body");
        }
    } else {
        let length = head.content_length.unwrap_or(0);
        while buf.len() < length {
            ensure!(read_more(socket, buf).await? > 0, "connection closed in a body");
        }
        body.extend(buf.drain(..length));
    }
    Ok((head.status, body))
}

pub(crate) async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(16 * 1024);
    socket.read_buf(buf).await
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Streaming decoder of `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
pub(crate) struct Dechunker {
    /// Bytes of chunk data still to come in the current chunk.
    remaining: usize,
    /// The CRLF after a chunk's data is still to come.
    expect_crlf: bool,
    pub(crate) finished: bool,
}

impl Dechunker {
    /// Appends the payload found in `input` to `out`; returns how many bytes of
    /// `input` were consumed (the rest is an incomplete chunk-size line or CRLF).
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<usize> {
        let mut at = 0;
        while at < input.len() && !self.finished {
            if self.remaining > 0 {
                let take = self.remaining.min(input.len() - at);
                out.extend_from_slice(&input[at..at + take]);
                self.remaining -= take;
                at += take;
                if self.remaining == 0 {
                    self.expect_crlf = true;
                }
            } else if self.expect_crlf {
                if input.len() - at < 2 {
                    break;
                }
                ensure!(&input[at..at + 2] == b"\r\n", "missing CRLF after a chunk");
                at += 2;
                self.expect_crlf = false;
            } else {
                let Some(end) = find(&input[at..], b"\r\n") else {
                    break;
                };
                let line = std::str::from_utf8(&input[at..at + end])?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).with_context(|| format!("bad chunk size {line:?}"))?;
                at += end + 2;
                if size == 0 {
                    // The last chunk; trailers are not used by the servers measured.
                    self.finished = true;
                    at = (at + 2).min(input.len());
                } else {
                    self.remaining = size;
                }
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut chunks = Dechunker::default();
            let mut out = Vec::new();
            let mut pending = wire[..split].to_vec();
            let consumed = chunks.feed(&pending, &mut out).unwrap();
            pending.drain(..consumed);
            pending.extend_from_slice(&wire[split..]);
            chunks.feed(&pending, &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(chunks.finished);
        }
    }

    #[test]
    fn parses_status_and_framing() {
        let head = parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\nX: y").unwrap();
        assert_eq!((head.status, head.content_length, head.chunked), (202, Some(12), false));
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").unwrap();
        assert!(head.chunked);
    }
}
