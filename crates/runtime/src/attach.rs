//! Attaching to a container's main process (`kubectl attach`, `kubectl run -it`).
//!
//! A container created with `stdin` or `tty` gets an attach socket,
//! `<bundle>/attach.sock`, served by its shim. The shim owns the container's
//! stdio: its stdin pipe (or, with a TTY, the pseudo-terminal master runc passed it
//! over the console socket) and its output, which it writes to the CRI log and
//! copies to every attached client.
//!
//! The socket speaks frames of `[kind: u8][length: u32 big-endian][payload]`:
//! - client to shim: [`Frame::Stdin`] bytes, [`Frame::CloseStdin`] (the client
//!   closed its stdin; with `stdinOnce` the container's stdin is then closed for
//!   good), [`Frame::Resize`] (`width: u16, height: u16`, big-endian);
//! - shim to client: [`Frame::Stdout`], [`Frame::Stderr`].
//!
//! The shim closes every connection when the container exits.
//!
//! Bundle paths can exceed the 108 bytes a Unix socket address holds, so both
//! sides name the socket through a directory file descriptor:
//! `/proc/<pid>/fd/<dirfd>/attach.sock`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Result, RuntimeError};

/// The attach socket's file name in the bundle.
pub(crate) const ATTACH_SOCKET: &str = "attach.sock";

/// Largest payload accepted in one frame.
const MAX_FRAME: usize = 1 << 20;

/// One message on the attach socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// The client closed its stdin.
    CloseStdin,
    /// New terminal size (columns, rows).
    Resize(u16, u16),
    /// Container output (with a TTY, all output).
    Stdout(Vec<u8>),
    /// Container standard error (never with a TTY).
    Stderr(Vec<u8>),
}

/// A malformed frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The kind byte is not one we know.
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    /// The length exceeds [`MAX_FRAME`] or does not fit the kind.
    #[error("bad attach frame length {0}")]
    BadLength(usize),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Stdin(_) => 0,
            Frame::CloseStdin => 3,
            Frame::Resize(..) => 4,
            Frame::Stdout(_) => 1,
            Frame::Stderr(_) => 2,
        }
    }

    /// The frame's wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.clone(),
            Frame::CloseStdin => Vec::new(),
            Frame::Resize(w, h) => [w.to_be_bytes(), h.to_be_bytes()].concat(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Check a header (`kind`, `len`) before reading the payload.
    fn check_header(kind: u8, len: usize) -> std::result::Result<(), FrameError> {
        if len > MAX_FRAME {
            return Err(FrameError::BadLength(len));
        }
        match kind {
            0..=2 => Ok(()),
            3 if len == 0 => Ok(()),
            4 if len == 4 => Ok(()),
            3 | 4 => Err(FrameError::BadLength(len)),
            k => Err(FrameError::UnknownKind(k)),
        }
    }

    /// Build a frame from a checked header and its payload.
    fn from_parts(kind: u8, payload: Vec<u8>) -> std::result::Result<Frame, FrameError> {
        Frame::check_header(kind, payload.len())?;
        Ok(match kind {
            0 => Frame::Stdin(payload),
            1 => Frame::Stdout(payload),
            2 => Frame::Stderr(payload),
            3 => Frame::CloseStdin,
            _ => Frame::Resize(
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            ),
        })
    }

    /// Read one frame (blocking); `Ok(None)` at a clean end of stream.
    pub(crate) fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut header = [0u8; 5];
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (kind, len) = parse_header(header);
        Frame::check_header(kind, len).map_err(io::Error::other)?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Frame::from_parts(kind, payload)
            .map_err(io::Error::other)
            .map(Some)
    }
}

fn parse_header(h: [u8; 5]) -> (u8, usize) {
    (h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize)
}

/// `/proc/<our pid>/fd/<fd>/<name>`: a short address for a socket in `dir`, valid
/// (for us and our children) while `dir_fd` stays open.
pub(crate) fn short_path(dir_fd: &std::fs::File, name: &str) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}/{name}",
        std::process::id(),
        dir_fd.as_raw_fd()
    ))
}

/// Whether the container in `bundle` can be attached to with streams.
pub(crate) fn available(bundle: &Path) -> bool {
    bundle.join(ATTACH_SOCKET).exists()
}

/// The reading half of an attach session: container output.
#[derive(Debug)]
pub struct AttachReader {
    inner: tokio::net::unix::OwnedReadHalf,
}

impl AttachReader {
    /// The next output frame; `None` once the container has exited (or the shim is gone).
    pub async fn next(&mut self) -> Option<Frame> {
        let mut header = [0u8; 5];
        self.inner.read_exact(&mut header).await.ok()?;
        let (kind, len) = parse_header(header);
        if Frame::check_header(kind, len).is_err() {
            return None;
        }
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload).await.ok()?;
        Frame::from_parts(kind, payload).ok()
    }
}

/// The writing half of an attach session: stdin and terminal size.
#[derive(Debug)]
pub struct AttachWriter {
    inner: tokio::net::unix::OwnedWriteHalf,
}

impl AttachWriter {
    async fn send(&mut self, f: Frame) -> io::Result<()> {
        self.inner.write_all(&f.encode()).await
    }

    /// Write bytes to the container's stdin.
    pub async fn stdin(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_FRAME) {
            self.send(Frame::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Tell the shim this client closed its stdin.
    pub async fn close_stdin(&mut self) -> io::Result<()> {
        self.send(Frame::CloseStdin).await
    }

    /// Resize the container's terminal.
    pub async fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
        self.send(Frame::Resize(width, height)).await
    }
}

/// A live attach session (see [`crate::ContainerRuntime::attach`]).
#[derive(Debug)]
pub struct AttachSession {
    /// Container output.
    pub reader: AttachReader,
    /// Container input.
    pub writer: AttachWriter,
    /// Whether the container has a terminal.
    pub tty: bool,
    /// Whether the container keeps a stdin open.
    pub stdin: bool,
}

/// Connect to the attach socket of the container in `bundle`.
pub(crate) async fn connect(bundle: &Path, tty: bool, stdin: bool) -> Result<AttachSession> {
    let dir = std::fs::File::open(bundle)?;
    let path = short_path(&dir, ATTACH_SOCKET);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| RuntimeError::Oci(format!("connecting to the attach socket: {e}")))?;
    drop(dir);
    let (r, w) = stream.into_split();
    Ok(AttachSession {
        reader: AttachReader { inner: r },
        writer: AttachWriter { inner: w },
        tty,
        stdin,
    })
}

/// Write `f` to `w` (blocking), for the shim's side.
pub(crate) fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    w.write_all(&f.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::CloseStdin,
            Frame::Resize(120, 40),
            Frame::Stdout(Vec::new()),
            Frame::Stderr(b"oops".to_vec()),
        ] {
            let bytes = f.encode();
            let back = Frame::read_from(&mut bytes.as_slice()).unwrap();
            assert_eq!(back, Some(f));
        }
        assert_eq!(Frame::read_from(&mut [].as_slice()).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_refused() {
        // unknown kind
        assert!(Frame::read_from(&mut [9u8, 0, 0, 0, 0].as_slice()).is_err());
        // resize with a wrong length
        assert!(Frame::read_from(&mut [4u8, 0, 0, 0, 1, 7].as_slice()).is_err());
        // oversized
        assert!(Frame::read_from(&mut [0u8, 0xff, 0xff, 0xff, 0xff].as_slice()).is_err());
        // truncated payload
        assert!(Frame::read_from(&mut [0u8, 0, 0, 0, 3, b'a'].as_slice()).is_err());
    }

    #[test]
    fn short_path_names_the_fd() {
        let dir = std::fs::File::open("/").unwrap();
        let p = short_path(&dir, "x.sock");
        assert_eq!(
            p,
            PathBuf::from(format!(
                "/proc/{}/fd/{}/x.sock",
                std::process::id(),
                dir.as_raw_fd()
            ))
        );
    }
}
