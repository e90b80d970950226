//! Just enough SPDY/3.1 for `kubectl port-forward` (the server side).
//!
//! Frames (all integers big-endian):
//! - control: `1|version(15)=3`, `type(16)`, `flags(8)`, `length(24)`, payload;
//! - data: `0|stream-id(31)`, `flags(8)`, `length(24)`, payload.
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams, one per
//! direction for the whole connection, primed with the SPDY/3 dictionary and
//! sync-flushed after each block. We inflate the client's blocks with
//! `miniz_oxide` (which has no preset-dictionary API: the dictionary is put in
//! front of the output window instead, where back-references find it). Our
//! own blocks are written as *stored* deflate blocks without a dictionary,
//! which every zlib reader accepts.
//!
//! Flow control (WINDOW_UPDATE) is ignored in both directions, as the Go
//! implementation kubectl uses does.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// Control frame types.
pub mod kind {
    /// Open a stream.
    pub const SYN_STREAM: u16 = 1;
    /// Accept a stream.
    pub const SYN_REPLY: u16 = 2;
    /// Abort a stream.
    pub const RST_STREAM: u16 = 3;
    /// Connection settings.
    pub const SETTINGS: u16 = 4;
    /// Liveness check (echoed).
    pub const PING: u16 = 6;
    /// Connection shutdown.
    pub const GOAWAY: u16 = 7;
    /// More headers.
    pub const HEADERS: u16 = 8;
    /// Flow control.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// Last frame of a stream in that direction.
pub const FLAG_FIN: u8 = 0x01;

/// Errors of the SPDY codec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    /// Not SPDY version 3.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame too short for its type.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// The header block did not inflate.
    #[error("bad header block: {0}")]
    Compression(String),
    /// A frame larger than we accept.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
}

/// Name/value pairs of a header block (names are lower-case on the wire).
pub type Headers = Vec<(String, String)>;

/// A frame with its header block still compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Payload for a stream.
    Data {
        /// Stream id.
        stream: u32,
        /// Flags (FIN).
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame.
    Control {
        /// Its type ([`kind`]).
        kind: u16,
        /// Its flags.
        flags: u8,
        /// Its payload.
        payload: Bytes,
    },
}

/// Frames larger than this are refused (kubectl sends at most 32 KiB).
pub const MAX_FRAME: usize = 16 << 20;

/// Take one complete frame off the front of `buf`, if there is one.
pub fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let head = buf.split_to(8);
    let payload = buf.split_to(len).freeze();
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(Some(Frame::Control {
            kind,
            flags,
            payload,
        }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Ok(Some(Frame::Data {
            stream,
            flags,
            data: payload,
        }))
    }
}

/// Encode a data frame.
pub fn data_frame(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.put_u32(stream & 0x7fff_ffff);
    out.put_u8(if fin { FLAG_FIN } else { 0 });
    put_u24(&mut out, data.len());
    out.extend_from_slice(data);
    out
}

/// Encode a control frame.
pub fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.put_u16(0x8003);
    out.put_u16(kind);
    out.put_u8(flags);
    put_u24(&mut out, payload.len());
    out.extend_from_slice(payload);
    out
}

fn put_u24(out: &mut Vec<u8>, n: usize) {
    let n = n as u32;
    out.extend_from_slice(&n.to_be_bytes()[1..]);
}

/// A RST_STREAM with `status` (e.g. 5 = CANCEL).
pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(8);
    p.put_u32(stream & 0x7fff_ffff);
    p.put_u32(status);
    control_frame(kind::RST_STREAM, 0, &p)
}

/// The fixed parts of a SYN_STREAM: `(stream id, flags)` and its header block.
pub fn syn_stream_parts(payload: &Bytes) -> Result<(u32, Bytes), SpdyError> {
    if payload.len() < 10 {
        return Err(SpdyError::Malformed("SYN_STREAM"));
    }
    let mut p = payload.clone();
    let stream = p.get_u32() & 0x7fff_ffff;
    p.advance(6); // associated stream, priority, slot
    Ok((stream, p))
}

/// Serialize name/value pairs (uncompressed header block).
pub fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32(headers.len() as u32);
    for (k, v) in headers {
        out.put_u32(k.len() as u32);
        out.extend_from_slice(k.as_bytes());
        out.put_u32(v.len() as u32);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Parse an uncompressed header block.
pub fn decode_headers(mut b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::Malformed("header block");
    let take = |b: &mut &[u8]| -> Result<String, SpdyError> {
        if b.len() < 4 {
            return Err(bad());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(bad());
    }
    let count = b.get_u32() as usize;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        out.push((k, v));
    }
    Ok(out)
}

/// A header's value (case-insensitive name).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Our side of header compression: one zlib stream of stored blocks.
#[derive(Debug, Default)]
pub struct HeaderWriter {
    started: bool,
}

impl HeaderWriter {
    /// Compress one header block: the zlib header on the first, then a stored
    /// deflate block per 64 KiB and an empty one, as a sync flush ends.
    pub fn compress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 16);
        if !self.started {
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for c in block.chunks(0xffff) {
            let n = c.len() as u16;
            out.push(0); // BFINAL=0, BTYPE=00 (stored), padding
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(c);
        }
        // The sync-flush marker (an empty stored block): Go's inflater only
        // hands out a stored block's bytes once it has read the next block
        // header, which must therefore be inside this frame.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }
}

const WINDOW: usize = 1 << 15;

/// The client's side of header compression: inflate with the SPDY dictionary.
pub struct HeaderReader {
    state: Box<DecompressorOxide>,
    window: Vec<u8>,
    pos: usize,
    header_done: bool,
}

impl std::fmt::Debug for HeaderReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderReader")
            .field("pos", &self.pos)
            .finish()
    }
}

impl Default for HeaderReader {
    fn default() -> Self {
        let dict = dictionary();
        let mut window = vec![0u8; WINDOW];
        window[..dict.len()].copy_from_slice(dict);
        HeaderReader {
            state: Box::default(),
            window,
            pos: dict.len(),
            header_done: false,
        }
    }
}

impl HeaderReader {
    /// Inflate one header block.
    pub fn decompress(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        if !self.header_done {
            if input.len() < 2 || input[0] & 0x0f != 8 {
                return Err(SpdyError::Compression("not a zlib stream".into()));
            }
            let skip = if input[1] & 0x20 != 0 { 6 } else { 2 };
            if input.len() < skip {
                return Err(SpdyError::Compression("short zlib header".into()));
            }
            input = &input[skip..];
            self.header_done = true;
        }
        let mut out = Vec::new();
        loop {
            let (status, used, made) = decompress(
                &mut self.state,
                input,
                &mut self.window,
                self.pos,
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT,
            );
            out.extend_from_slice(&self.window[self.pos..self.pos + made]);
            self.pos = (self.pos + made) & (WINDOW - 1);
            input = &input[used..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => {
                    if input.is_empty() || used == 0 && made == 0 {
                        return Ok(out);
                    }
                }
                other => return Err(SpdyError::Compression(format!("{other:?}"))),
            }
        }
    }
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1):
/// length-prefixed common header names and values, then a run of text.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414",
            "415416417502504505203 Non-Authoritative Information204 No Content",
            "301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden",
            "404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,",
            "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
            "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1424);
        for w in WORDS {
            d.put_u32(w.len() as u32);
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Adler-32 (the zlib dictionary id).
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_matches_spec() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"enq=0."));
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&data_frame(3, true, b"hello"));
        buf.extend_from_slice(&control_frame(kind::PING, 0, &7u32.to_be_bytes()));
        buf.extend_from_slice(&rst_stream(5, 5)[..10]);
        assert_eq!(
            parse_frame(&mut buf).unwrap(),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello")
            })
        );
        match parse_frame(&mut buf).unwrap() {
            Some(Frame::Control { kind, payload, .. }) => {
                assert_eq!(kind, kind::PING);
                assert_eq!(&payload[..], &7u32.to_be_bytes());
            }
            other => panic!("{other:?}"),
        }
        // the RST is incomplete
        assert_eq!(parse_frame(&mut buf).unwrap(), None);
        let mut v2 = BytesMut::from(&[0x80u8, 2, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(parse_frame(&mut v2), Err(SpdyError::Version(2)));
    }

    #[test]
    fn header_blocks_round_trip() {
        let block = encode_headers(&[("streamtype", "data"), ("port", "80")]);
        let h = decode_headers(&block).unwrap();
        assert_eq!(header(&h, "StreamType"), Some("data"));
        assert_eq!(header(&h, "port"), Some("80"));
        assert!(decode_headers(&block[..7]).is_err());
    }

    #[test]
    fn stored_blocks_inflate() {
        // Our writer's output must be readable by a plain zlib reader, across
        // several blocks of one stream.
        let mut w = HeaderWriter::default();
        let mut r = HeaderReader::default();
        for i in 0..3 {
            let block = encode_headers(&[("n", &i.to_string())]);
            let z = w.compress(&block);
            assert_eq!(r.decompress(&z).unwrap(), block);
        }
    }

    /// Produced with Python's `zlib.compressobj(zdict=<dictionary>)` and a
    /// sync flush after each block, as Go's SPDY framer does.
    #[test]
    fn inflates_with_the_dictionary() {
        assert_eq!(adler32(dictionary()), DICT_ID);
        let mut r = HeaderReader::default();
        let first = r.decompress(SAMPLE_1).unwrap();
        let h = decode_headers(&first).unwrap();
        assert_eq!(header(&h, "streamtype"), Some("error"));
        assert_eq!(header(&h, "port"), Some("80"));
        let second = r.decompress(SAMPLE_2).unwrap();
        let h = decode_headers(&second).unwrap();
        assert_eq!(header(&h, "streamtype"), Some("data"));
        assert_eq!(header(&h, "requestid"), Some("0"));
    }

    include!("spdy_samples.rs");
}
