//! Accepting the `:authority` that etcd 3.4's Go client sends when it dials a full URL.
//!
//! `etcdctl --endpoints=http://host:2379 endpoint status` (and `endpoint hashkv`, and every
//! `--cluster` command, which dial the members' advertised client URLs) open a connection whose
//! HTTP/2 requests carry `:authority: http://host:2379` — grpc-go of that era used the dial
//! target verbatim. etcd's Go server ignores it; the Rust `h2` server, correctly by RFC 9113,
//! rejects the malformed authority with a stream reset, and the command fails with
//! `PROTOCOL_ERROR`.
//!
//! [`AuthorityFix`] sits between the socket and the HTTP/2 server on the client port. It reads
//! the client's frames, and for each header block decodes it (HPACK, keeping the client's
//! dynamic table), drops a scheme and path from `:authority`, and re-encodes the block with
//! literals only (never indexing, so the server's dynamic table stays empty and in step). Every
//! other frame, and any connection that does not start with the HTTP/2 preface (the HTTP/1.1
//! JSON gateway), passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's SETTINGS_MAX_FRAME_SIZE (h2's default): re-encoded blocks are split to fit.
const MAX_FRAME: usize = 16_384;
/// Largest header block we assemble (a client sending more is cut off).
const MAX_BLOCK: usize = 1 << 20;

enum Mode {
    Preface,
    Http2,
    Passthrough,
}

/// A header block being assembled from HEADERS + CONTINUATION frames.
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The rewriting stream. See the [module docs](self).
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from `inner` not yet processed.
    raw: BytesMut,
    /// Processed bytes waiting for the server to read them.
    out: BytesMut,
    decoder: hpack::Decoder<'static>,
    block: Option<Block>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Preface,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            decoder: hpack::Decoder::new(),
            block: None,
            eof: false,
        }
    }

    /// Moves what can be processed from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.raw.split();
                    self.out.extend_from_slice(&all);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                    } else if n == PREFACE.len() {
                        self.out.extend_from_slice(&self.raw.split_to(n));
                        self.mode = Mode::Http2;
                    } else {
                        return Ok(());
                    }
                }
                Mode::Http2 => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = usize::from(self.raw[0]) << 16
                        | usize::from(self.raw[1]) << 8
                        | usize::from(self.raw[2]);
                    if self.raw.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame = self.raw.split_to(FRAME_HEADER + len);
                    self.frame(&frame)?;
                }
            }
        }
    }

    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream: [u8; 4] = [frame[5], frame[6], frame[7], frame[8]];
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let mut p = payload;
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    pad = usize::from(*p.first().ok_or_else(|| bad("empty padded frame"))?);
                    p = &p[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let fields: [u8; 5] = p
                        .get(..5)
                        .and_then(|f| f.try_into().ok())
                        .ok_or_else(|| bad("short priority fields"))?;
                    priority = Some(fields);
                    p = &p[5..];
                }
                let fragment = p
                    .get(
                        ..p.len()
                            .checked_sub(pad)
                            .ok_or_else(|| bad("padding too long"))?,
                    )
                    .ok_or_else(|| bad("padding too long"))?;
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                });
                if flags & END_HEADERS != 0 {
                    self.finish_block()?;
                }
            }
            CONTINUATION => {
                let block = self
                    .block
                    .as_mut()
                    .ok_or_else(|| bad("CONTINUATION without HEADERS"))?;
                if block.fragment.len() + payload.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                block.fragment.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.finish_block()?;
                }
            }
            _ => self.out.extend_from_slice(frame),
        }
        Ok(())
    }

    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| bad(&format!("HPACK: {e:?}")))?;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &headers {
            let value = if name == b":authority" {
                host_port(value)
            } else {
                value
            };
            encode_literal(&mut encoded, name, value);
        }
        self.write_block(&block, &encoded);
        Ok(())
    }

    fn write_block(&mut self, block: &Block, encoded: &[u8]) {
        let first_room = MAX_FRAME - if block.priority.is_some() { 5 } else { 0 };
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        let prio = block.priority.map(|p| p.to_vec()).unwrap_or_default();
        self.frame_out(HEADERS, flags, block.stream, &[&prio, first]);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.frame_out(CONTINUATION, flags, block.stream, &[chunk]);
        }
    }

    fn frame_out(&mut self, kind: u8, flags: u8, stream: [u8; 4], parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.out
            .extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        self.out.extend_from_slice(&stream);
        for p in parts {
            self.out.extend_from_slice(p);
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {what}"))
}

/// `http://host:2379/` → `host:2379`; anything without a scheme is returned as it is.
fn host_port(value: &[u8]) -> &[u8] {
    let Some(at) = value.windows(3).position(|w| w == b"://") else {
        return value;
    };
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    &rest[..end]
}

/// HPACK "literal header field without indexing — new name" (RFC 7541 §6.2.2), no Huffman.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    // A 7-bit prefix integer with the Huffman bit clear (RFC 7541 §5.1, §5.2).
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                        // Whatever is left is a partial frame: hand it on as it is.
                        let rest = this.raw.split();
                        this.out.extend_from_slice(&rest);
                        continue;
                    }
                    this.raw.extend_from_slice(rb.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(block: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![
            (block.len() >> 16) as u8,
            (block.len() >> 8) as u8,
            block.len() as u8,
            HEADERS,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(block);
        f
    }

    fn run(input: &[u8]) -> Vec<u8> {
        let mut fix = AuthorityFix::new(());
        // Byte by byte: frames split anywhere must come out the same.
        for b in input {
            fix.raw.extend_from_slice(&[*b]);
            fix.process().expect("process");
        }
        fix.out.to_vec()
    }

    fn decode_headers(out: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let frames = &out[PREFACE.len()..];
        assert_eq!(frames[3], HEADERS);
        let len = usize::from(frames[2]) | usize::from(frames[1]) << 8;
        hpack::Decoder::new()
            .decode(&frames[FRAME_HEADER..FRAME_HEADER + len])
            .expect("decode")
    }

    #[test]
    fn a_url_authority_becomes_host_and_port_and_the_rest_is_kept() {
        let mut enc = hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":authority"[..], &b"http://127.0.0.1:2379"[..]),
            (&b":path"[..], &b"/etcdserverpb.Maintenance/Status"[..]),
            (&b"te"[..], &b"trailers"[..]),
        ]);
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&block, END_HEADERS | END_STREAM));
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
        let out = run(&input);
        let headers = decode_headers(&out);
        assert_eq!(
            headers,
            vec![
                (b":method".to_vec(), b"POST".to_vec()),
                (b":authority".to_vec(), b"127.0.0.1:2379".to_vec()),
                (
                    b":path".to_vec(),
                    b"/etcdserverpb.Maintenance/Status".to_vec()
                ),
                (b"te".to_vec(), b"trailers".to_vec()),
            ]
        );
        assert_eq!(out[PREFACE.len() + 4], END_HEADERS | END_STREAM);
        assert!(
            out.ends_with(&[0, 0, 0, 4, 0, 0, 0, 0, 0]),
            "other frames pass"
        );
    }

    #[test]
    fn later_blocks_that_index_the_clients_table_still_decode() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for _ in 0..3 {
            // hpack's encoder indexes new literals: the 2nd and 3rd blocks refer to the table.
            let block = enc.encode(vec![
                (&b":authority"[..], &b"http://h:1"[..]),
                (&b"x-custom"[..], &b"v"[..]),
            ]);
            input.extend(headers_frame(&block, END_HEADERS));
        }
        let out = run(&input);
        let mut server = hpack::Decoder::new();
        let mut at = PREFACE.len();
        let mut blocks = 0;
        while at < out.len() {
            let len = usize::from(out[at + 2]) | usize::from(out[at + 1]) << 8;
            let h = server
                .decode(&out[at + FRAME_HEADER..at + FRAME_HEADER + len])
                .expect("decode");
            assert_eq!(h[0], (b":authority".to_vec(), b"h:1".to_vec()));
            assert_eq!(h[1], (b"x-custom".to_vec(), b"v".to_vec()));
            at += FRAME_HEADER + len;
            blocks += 1;
        }
        assert_eq!(blocks, 3);
    }

    #[test]
    fn http1_and_plain_authorities_pass_untouched() {
        let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(req), req.to_vec());
        assert_eq!(host_port(b"127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(host_port(b"https://a:1/x"), b"a:1");
    }

    #[test]
    fn long_values_use_multi_byte_lengths() {
        let long = vec![b'a'; 300];
        let mut out = Vec::new();
        encode_literal(&mut out, b"k", &long);
        let h = hpack::Decoder::new().decode(&out).expect("decode");
        assert_eq!(h, vec![(b"k".to_vec(), long)]);
    }
}
