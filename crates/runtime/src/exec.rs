//! Interactive exec: `runc exec` with streams the caller drives.
//!
//! - Without a TTY the process gets three pipes (stdin only when asked for).
//! - With a TTY we allocate a pseudo-terminal with `openpty`, make its slave the
//!   controlling terminal of a new session and hand it to `runc exec --tty` as
//!   stdin/stdout/stderr. runc then creates the container-side pty itself, puts
//!   our slave into raw mode and copies between the two; on `SIGWINCH` it copies
//!   the slave's window size to the container's pty. Resizing is therefore a
//!   `TIOCSWINSZ` on our master (the kernel sends `SIGWINCH` to runc, the
//!   foreground process of that terminal). No `--console-socket` is needed and
//!   runc stays in the foreground, so its exit status is the command's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Result, RuntimeError};

/// What to run and how to connect it.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Allocate a terminal (stdout and stderr are merged into it).
    pub tty: bool,
    /// Connect stdin (otherwise it is `/dev/null`).
    pub stdin: bool,
    /// Initial terminal size `(width, height)` (TTY only).
    pub size: Option<(u16, u16)>,
}

/// A boxed byte sink (the process's stdin).
pub type ExecWriter = Pin<Box<dyn AsyncWrite + Send>>;
/// A boxed byte source (the process's stdout or stderr).
pub type ExecReader = Pin<Box<dyn AsyncRead + Send>>;

/// Changes the window size of an exec's terminal.
#[derive(Clone, Debug)]
pub struct TerminalResizer {
    master: Arc<OwnedFd>,
}

impl TerminalResizer {
    /// Set the terminal to `width` columns by `height` rows.
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        set_winsize(self.master.as_raw_fd(), width, height)
    }
}

/// A running exec: its streams, its terminal (if any) and its exit code.
pub struct ExecProcess {
    /// The process's stdin (`None` unless requested).
    pub stdin: Option<ExecWriter>,
    /// Its stdout (with a TTY: the terminal's output).
    pub stdout: Option<ExecReader>,
    /// Its stderr (`None` with a TTY).
    pub stderr: Option<ExecReader>,
    /// Set with a TTY.
    pub resizer: Option<TerminalResizer>,
    /// Resolves to the exit code (128 + signal for a killed process).
    pub exit: futures::future::BoxFuture<'static, Result<i32>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.resizer.is_some())
            .finish()
    }
}

fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Start `runc --root <root> exec [--tty] <id> argv...`.
pub(crate) fn spawn(runc: &Path, root: &Path, id: &str, req: &ExecRequest) -> Result<ExecProcess> {
    if req.argv.is_empty() {
        return Err(RuntimeError::Oci("exec needs a command".into()));
    }
    let mut cmd = tokio::process::Command::new(runc);
    cmd.arg("--root").arg(root).arg("exec");
    if req.tty {
        cmd.arg("--tty");
    }
    cmd.arg(id).args(&req.argv).kill_on_drop(true);
    if req.tty {
        spawn_tty(cmd, req)
    } else {
        spawn_pipes(cmd, req)
    }
}

fn spawn_pipes(mut cmd: tokio::process::Command, req: &ExecRequest) -> Result<ExecProcess> {
    use std::process::Stdio;
    cmd.stdin(if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Oci(format!("runc exec: {e}")))?;
    let stdin = child.stdin.take().map(|s| Box::pin(s) as ExecWriter);
    let stdout = child.stdout.take().map(|s| Box::pin(s) as ExecReader);
    let stderr = child.stderr.take().map(|s| Box::pin(s) as ExecReader);
    let exit = Box::pin(async move {
        let st = child
            .wait()
            .await
            .map_err(|e| RuntimeError::Oci(format!("runc exec: {e}")))?;
        Ok(exit_code(st))
    });
    Ok(ExecProcess {
        stdin,
        stdout,
        stderr,
        resizer: None,
        exit,
    })
}

pub(crate) fn set_winsize(fd: RawFd, width: u16, height: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Allocate a pseudo-terminal: `(master, slave)`.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two fds; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, both fds are ours.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [m.as_raw_fd(), s.as_raw_fd()] {
        // SAFETY: fcntl on fds we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    Ok((m, s))
}

fn spawn_tty(mut cmd: tokio::process::Command, req: &ExecRequest) -> Result<ExecProcess> {
    let oci = |e: std::io::Error| RuntimeError::Oci(format!("allocating a terminal: {e}"));
    let (master, slave) = open_pty().map_err(oci)?;
    let (w, h) = req.size.unwrap_or((80, 24));
    set_winsize(master.as_raw_fd(), w.max(1), h.max(1)).map_err(oci)?;
    let stdio = |fd: &OwnedFd| fd.try_clone().map(std::process::Stdio::from);
    cmd.stdin(stdio(&slave).map_err(oci)?)
        .stdout(stdio(&slave).map_err(oci)?)
        .stderr(stdio(&slave).map_err(oci)?);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Oci(format!("runc exec: {e}")))?;
    drop(cmd);
    drop(slave);
    // SAFETY: fcntl on the master we own.
    unsafe {
        let fd = master.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let master = Arc::new(master);
    // SAFETY: the fd stays open as long as the AsyncFd (PtyFd holds an Arc to it).
    let io =
        unsafe { AsyncFd::register(PtyFd(master.clone())) }.map_err(|e| oci(e.into_parts().1))?;
    let io = Arc::new(io);
    let exit = Box::pin(async move {
        let st = child
            .wait()
            .await
            .map_err(|e| RuntimeError::Oci(format!("runc exec: {e}")))?;
        Ok(exit_code(st))
    });
    Ok(ExecProcess {
        stdin: req.stdin.then(|| Box::pin(Pty(io.clone())) as ExecWriter),
        stdout: Some(Box::pin(Pty(io)) as ExecReader),
        stderr: None,
        resizer: Some(TerminalResizer { master }),
        exit,
    })
}

/// The pty master, shared by the reader, the writer and the resizer.
struct PtyFd(Arc<OwnedFd>);

impl AsRawFd for PtyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Async reads and writes on the pty master. A read after the terminal's last
/// user went away fails with `EIO`: that is reported as end of file.
struct Pty(Arc<AsyncFd<PtyFd>>);

impl AsyncRead for Pty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = match self.0.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|fd| {
                // SAFETY: reading into an initialized buffer of that length.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Pty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = match self.0.poll_write_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let res = guard.try_io(|fd| {
                // SAFETY: writing from a valid slice.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A terminal has no half-close; EOF is ^D, which the caller sends itself.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn pipes_carry_stdin_stdout_and_exit_code() {
        // `sh` stands in for runc: the spawn path is the same.
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 3"]);
        let req = ExecRequest {
            argv: vec!["x".into()],
            stdin: true,
            ..Default::default()
        };
        let mut p = spawn_pipes(cmd, &req).unwrap();
        let mut stdin = p.stdin.take().unwrap();
        stdin.write_all(b"hello").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        p.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let mut err = String::new();
        p.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert_eq!(out, "hello");
        assert_eq!(err, "err\n");
        assert_eq!(p.exit.await.unwrap(), 3);
    }

    #[tokio::test]
    async fn tty_reports_size_and_echoes() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "stty size; read x; echo got-$x; exit 4"]);
        let req = ExecRequest {
            argv: vec!["x".into()],
            stdin: true,
            tty: true,
            size: Some((100, 30)),
        };
        let mut p = spawn_tty(cmd, &req).unwrap();
        assert!(p.stderr.is_none());
        p.resizer.as_ref().unwrap().resize(100, 30).unwrap();
        let mut stdin = p.stdin.take().unwrap();
        stdin.write_all(b"abc\n").await.unwrap();
        let mut out = Vec::new();
        p.stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("30 100"), "{out}");
        assert!(out.contains("got-abc"), "{out}");
        assert_eq!(p.exit.await.unwrap(), 4);
    }

    #[test]
    fn empty_argv_is_refused() {
        let r = spawn(
            Path::new("runc"),
            Path::new("/x"),
            "id",
            &ExecRequest::default(),
        );
        assert!(r.is_err());
    }
}
