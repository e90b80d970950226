//! The per-container supervisor ("shim"). The agent spawns
//! `<shim_exe> internal-shim --bundle DIR --id ID --runc PATH --runc-root DIR --log PATH --log-max BYTES --cgroup-path PATH`;
//! the shim forks away from the agent (`setsid`, child subreaper), runs
//! `runc run --detach`, reports `ok <pid>` or `error <message>` on its stdout (a
//! pipe the agent reads), then copies the container's stdout/stderr into the CRI
//! log, reaps the container and records its exit (code, time, OOM) in
//! `DIR/exit.json`, and runs `runc delete`. It outlives the agent.
//!
//! `shim_main` must be called from a single-threaded process (before any async
//! runtime starts): it forks.

use crate::attach::{short_path, write_frame, Frame, ATTACH_SOCKET};
use crate::cri_log::{CriLogWriter, LineSplitter, LogStream};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The hidden subcommand the shim executable is started with.
pub const SHIM_SUBCOMMAND: &str = "internal-shim";

/// `DIR/started.json`, written once the container runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StartedState {
    pub pid: u32,
    pub shim_pid: u32,
    pub started_at: DateTime<Utc>,
    /// `/proc/<pid>/stat` start times, to tell a reused pid (e.g. after a reboot).
    #[serde(default)]
    pub pid_start_time: Option<u64>,
    #[serde(default)]
    pub shim_start_time: Option<u64>,
}

/// `DIR/exit.json`, written when the container has exited.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ExitState {
    pub exit_code: i32,
    pub finished_at: DateTime<Utc>,
    pub oom_killed: bool,
}

pub(crate) const STARTED_FILE: &str = "started.json";
pub(crate) const EXIT_FILE: &str = "exit.json";
/// The socket runc sends a TTY container's terminal master to.
const CONSOLE_SOCKET: &str = "console.sock";

/// Parsed shim arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShimArgs {
    pub bundle: PathBuf,
    pub id: String,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub log: PathBuf,
    pub log_max: u64,
    pub cgroup_path: String,
    /// The container's stdio: stdin kept open, closed after the first attach, a TTY.
    pub stdio: StdioMode,
}

/// How the shim connects the container's main process (`--stdio stdin,once,tty`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StdioMode {
    /// Keep a stdin open for attach clients (`stdin: true`).
    pub stdin: bool,
    /// Close that stdin when the first attach client closes its own (`stdinOnce`).
    pub stdin_once: bool,
    /// Give the process a terminal (`tty: true`).
    pub tty: bool,
}

impl StdioMode {
    /// Whether the container gets an attach socket.
    pub(crate) fn attachable(&self) -> bool {
        self.stdin || self.tty
    }

    fn to_arg(self) -> String {
        let mut v = Vec::new();
        if self.stdin {
            v.push("stdin");
        }
        if self.stdin_once {
            v.push("once");
        }
        if self.tty {
            v.push("tty");
        }
        v.join(",")
    }

    fn parse(s: &str) -> Result<Self, String> {
        let mut m = StdioMode::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part {
                "stdin" => m.stdin = true,
                "once" => m.stdin_once = true,
                "tty" => m.tty = true,
                other => return Err(format!("bad --stdio part {other}")),
            }
        }
        Ok(m)
    }
}

impl ShimArgs {
    /// The argv after the executable (starting with [`SHIM_SUBCOMMAND`]).
    pub(crate) fn to_argv(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![SHIM_SUBCOMMAND.into()];
        let mut push = |k: &str, val: std::ffi::OsString| {
            v.push(k.into());
            v.push(val);
        };
        push("--bundle", self.bundle.clone().into());
        push("--id", self.id.clone().into());
        push("--runc", self.runc.clone().into());
        push("--runc-root", self.runc_root.clone().into());
        push("--log", self.log.clone().into());
        push("--log-max", self.log_max.to_string().into());
        push("--cgroup-path", self.cgroup_path.clone().into());
        if self.stdio != StdioMode::default() {
            push("--stdio", self.stdio.to_arg().into());
        }
        v
    }

    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut a = ShimArgs::default();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            if k == SHIM_SUBCOMMAND {
                continue;
            }
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            match k.as_str() {
                "--bundle" => a.bundle = v.into(),
                "--id" => a.id = v.clone(),
                "--runc" => a.runc = v.into(),
                "--runc-root" => a.runc_root = v.into(),
                "--log" => a.log = v.into(),
                "--log-max" => a.log_max = v.parse().map_err(|_| format!("bad --log-max {v}"))?,
                "--cgroup-path" => a.cgroup_path = v.clone(),
                "--stdio" => a.stdio = StdioMode::parse(v)?,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if a.bundle.as_os_str().is_empty() || a.id.is_empty() || a.runc.as_os_str().is_empty() {
            return Err("--bundle, --id and --runc are required".into());
        }
        Ok(a)
    }
}

/// Entry point of `navarch internal-shim ...`; `args` are the arguments after the
/// executable name (a leading `internal-shim` is skipped). Returns the exit code.
pub fn shim_main(args: &[String]) -> i32 {
    let a = match ShimArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(io::stdout(), "error {e}");
            return 2;
        }
    };
    // Detach: the direct child of the agent exits at once; the grandchild lives on.
    // SAFETY: the shim process is single-threaded here (documented requirement).
    match unsafe { libc::fork() } {
        -1 => {
            let _ = writeln!(io::stdout(), "error fork: {}", io::Error::last_os_error());
            return 1;
        }
        0 => {}
        _ => return 0,
    }
    // SAFETY: plain syscalls.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // Do not pin the agent's working directory.
    let _ = std::env::set_current_dir("/");
    let code = match supervise(&a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim {}: {e}", a.id);
            1
        }
    };
    // SAFETY: leave without running atexit handlers of a forked process.
    unsafe { libc::_exit(code) }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Point fds 0, 1 (the agent's status pipe) and 2 at /dev/null or the shim log.
fn detach_stdio(bundle: &Path) {
    let null = File::options().read(true).write(true).open("/dev/null");
    let shim_log = File::options()
        .create(true)
        .append(true)
        .open(bundle.join("shim.log"));
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto the standard fds.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
            libc::dup2(n.as_raw_fd(), 1);
        }
        if let Ok(l) = &shim_log {
            libc::dup2(l.as_raw_fd(), 2);
        }
    }
}

fn runc_error(a: &ShimArgs, out: &std::process::Output) -> String {
    // runc --log-format json: the last "error" message is the useful one.
    let log = std::fs::read_to_string(a.bundle.join("runc.log")).unwrap_or_default();
    let msg = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_string));
    msg.unwrap_or_else(|| {
        format!(
            "runc exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The attach clients of a container with stdin or a TTY, and its input side.
struct Hub {
    clients: Mutex<Vec<UnixStream>>,
    /// The container's stdin: the write end of its stdin pipe or a dup of the pty master.
    stdin: Mutex<Option<File>>,
    /// The pty master (TTY only), for resizing.
    master: Option<OwnedFd>,
    mode: StdioMode,
}

impl Hub {
    /// Copy output to every attached client, dropping those that fail.
    fn broadcast(&self, stream: LogStream, data: &[u8]) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if clients.is_empty() {
            return;
        }
        let frame = match stream {
            LogStream::Stdout => Frame::Stdout(data.to_vec()),
            LogStream::Stderr => Frame::Stderr(data.to_vec()),
        };
        clients.retain_mut(|c| write_frame(c, &frame).is_ok());
    }

    /// Accept attach clients until the process exits.
    fn serve(self: Arc<Self>, listener: UnixListener) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            // A stuck client must not stall the container's output.
            let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
            if let (Ok(out), Ok(mut clients)) = (conn.try_clone(), self.clients.lock()) {
                clients.push(out);
            }
            let hub = self.clone();
            std::thread::spawn(move || hub.client(conn));
        }
    }

    /// Apply one client's input frames.
    fn client(&self, mut conn: UnixStream) {
        while let Ok(Some(frame)) = Frame::read_from(&mut conn) {
            match frame {
                Frame::Stdin(data) => {
                    if let Ok(mut stdin) = self.stdin.lock() {
                        if let Some(f) = stdin.as_mut() {
                            if f.write_all(&data).is_err() {
                                *stdin = None;
                            }
                        }
                    }
                }
                Frame::CloseStdin if self.mode.stdin_once => {
                    if let Ok(mut stdin) = self.stdin.lock() {
                        if self.mode.tty {
                            // A terminal has no end of file of its own: send EOF (^D).
                            if let Some(f) = stdin.as_mut() {
                                let _ = f.write_all(&[4]);
                            }
                        }
                        *stdin = None;
                    }
                }
                Frame::Resize(w, h) => {
                    if let Some(m) = &self.master {
                        use std::os::fd::AsRawFd;
                        let _ = crate::exec::set_winsize(m.as_raw_fd(), w.max(1), h.max(1));
                    }
                }
                _ => {}
            }
        }
    }
}

fn copy_stream(
    r: OwnedFd,
    stream: LogStream,
    log: Arc<Mutex<CriLogWriter>>,
    hub: Option<Arc<Hub>>,
) {
    let mut f = File::from(r);
    let mut buf = vec![0u8; 32 * 1024];
    let mut split = LineSplitter::default();
    let mut emit = |partial: bool, line: &[u8]| -> io::Result<()> {
        match log.lock() {
            Ok(mut w) => w.write_record(stream, partial, line),
            Err(_) => Err(io::Error::other("log lock poisoned")),
        }
    };
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(h) = &hub {
                    h.broadcast(stream, &buf[..n]);
                }
                if let Err(e) = split.feed(&buf[..n], &mut emit) {
                    eprintln!("log write: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = split.finish(&mut emit);
}

/// Receive the pty master runc sends over the console socket.
fn receive_console(listener: &UnixListener) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(io::Error::other("runc sent no terminal"));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut data = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one SCM_RIGHTS message with one fd (u64 aligned).
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at buffers that live across the call.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Ok(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Err(io::Error::other("runc's console message carried no fd"))
}

fn write_json(path: &Path, v: &impl Serialize) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(v).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

/// The OOM-kill counter of the container's memory cgroup (v1 or v2), if readable.
pub(crate) fn oom_kills(cgroup_path: &str) -> Option<u64> {
    let rel = cgroup_path.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(rel)
        .join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join("memory.events");
    for p in [v1, v2] {
        if let Ok(s) = std::fs::read_to_string(&p) {
            return s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            });
        }
    }
    None
}

fn supervise(a: &ShimArgs) -> io::Result<()> {
    let mut status_pipe = io::stdout();
    let mode = a.stdio;
    // Sockets are named through this directory fd: bundle paths can be too long.
    let dir = File::open(&a.bundle)?;
    let bind = |name: &str| -> io::Result<UnixListener> {
        let _ = std::fs::remove_file(a.bundle.join(name));
        UnixListener::bind(short_path(&dir, name))
    };
    let console = if mode.tty {
        Some(bind(CONSOLE_SOCKET)?)
    } else {
        None
    };
    let attach = if mode.attachable() {
        Some(bind(ATTACH_SOCKET)?)
    } else {
        None
    };
    let log = Arc::new(Mutex::new(CriLogWriter::open(&a.log, a.log_max)?));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut copiers = Vec::new();
    let mut spawn_copier = |r: OwnedFd, s: LogStream, hub: Option<Arc<Hub>>| {
        let log = log.clone();
        let tx = done_tx.clone();
        copiers.push(std::thread::spawn(move || {
            copy_stream(r, s, log, hub);
            let _ = tx.send(());
        }));
    };
    let pid_file = a.bundle.join("pid");
    let mut cmd = Command::new(&a.runc);
    cmd.arg("--root")
        .arg(&a.runc_root)
        .arg("--log")
        .arg(a.bundle.join("runc.log"))
        .args(["--log-format", "json", "run", "--detach", "--bundle"])
        .arg(&a.bundle)
        .arg("--pid-file")
        .arg(&pid_file);
    let mut hub = None;
    if mode.tty {
        // runc hands the terminal's master over this socket; output goes through it.
        cmd.arg("--console-socket")
            .arg(short_path(&dir, CONSOLE_SOCKET))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let mut stdin_w = None;
        if mode.stdin {
            let (r, w) = pipe()?;
            cmd.stdin(Stdio::from(r));
            stdin_w = Some(File::from(w));
        } else {
            cmd.stdin(Stdio::null());
        }
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        if mode.stdin {
            hub = Some(Arc::new(Hub {
                clients: Mutex::new(Vec::new()),
                stdin: Mutex::new(stdin_w),
                master: None,
                mode,
            }));
        }
        spawn_copier(out_r, LogStream::Stdout, hub.clone());
        spawn_copier(err_r, LogStream::Stderr, hub.clone());
    }
    let out = cmd.arg(&a.id).current_dir(&a.bundle).output();
    drop(cmd);
    // `output()` with explicit Stdio: the write ends went to runc and are closed here.
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(status_pipe, "error running {}: {e}", a.runc.display());
            return Err(e);
        }
    };
    if !out.status.success() {
        let msg = runc_error(a, &out);
        let _ = writeln!(status_pipe, "error {}", msg.replace('\n', " "));
        let _ = Command::new(&a.runc)
            .arg("--root")
            .arg(&a.runc_root)
            .args(["delete", "--force", &a.id])
            .output();
        return Err(io::Error::other(msg));
    }
    if let Some(console) = &console {
        let master = match receive_console(console) {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(status_pipe, "error receiving the terminal: {e}");
                let _ = Command::new(&a.runc)
                    .arg("--root")
                    .arg(&a.runc_root)
                    .args(["delete", "--force", &a.id])
                    .output();
                return Err(e);
            }
        };
        let _ = std::fs::remove_file(a.bundle.join(CONSOLE_SOCKET));
        let input = if mode.stdin {
            Some(File::from(master.try_clone()?))
        } else {
            None
        };
        let reader = master.try_clone()?;
        let h = Arc::new(Hub {
            clients: Mutex::new(Vec::new()),
            stdin: Mutex::new(input),
            master: Some(master),
            mode,
        });
        spawn_copier(reader, LogStream::Stdout, Some(h.clone()));
        hub = Some(h);
    }
    drop(done_tx);
    if let (Some(listener), Some(h)) = (attach, hub.clone()) {
        std::thread::spawn(move || h.serve(listener));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| io::Error::other("runc wrote no pid file"))?;
    write_json(
        &a.bundle.join(STARTED_FILE),
        &StartedState {
            pid: pid as u32,
            shim_pid: std::process::id(),
            started_at: Utc::now(),
            pid_start_time: crate::sys::process_start_time(pid as u32),
            shim_start_time: crate::sys::process_start_time(std::process::id()),
        },
    )?;
    let _ = writeln!(status_pipe, "ok {pid}");
    let _ = status_pipe.flush();
    detach_stdio(&a.bundle);
    // Reap everything re-parented to us; stop when the container's init is gone.
    let exit_code = loop {
        let mut status = 0;
        // SAFETY: reaping our (adopted) children.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: the container was not re-parented to us (should not happen).
            break if crate::sys::process_alive(pid as u32) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            } else {
                255
            };
        }
        if r == pid {
            break if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                255
            };
        }
    };
    let finished_at = Utc::now();
    // Let the log copiers drain (processes left holding the pipes are not waited for).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for _ in 0..copiers.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let oom_killed = exit_code == 137 && oom_kills(&a.cgroup_path).unwrap_or(0) > 0;
    let _ = Command::new(&a.runc)
        .arg("--root")
        .arg(&a.runc_root)
        .args(["delete", "--force", &a.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_file(a.bundle.join(ATTACH_SOCKET));
    write_json(
        &a.bundle.join(EXIT_FILE),
        &ExitState {
            exit_code,
            finished_at,
            oom_killed,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trips() {
        let a = ShimArgs {
            bundle: "/b".into(),
            id: "abc".into(),
            runc: "/usr/sbin/runc".into(),
            runc_root: "/run/x".into(),
            log: "/l/0.log".into(),
            log_max: 42,
            cgroup_path: "/navarch/p/abc".into(),
            stdio: StdioMode {
                stdin: true,
                stdin_once: true,
                tty: false,
            },
        };
        let argv: Vec<String> = a
            .to_argv()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(argv[0], SHIM_SUBCOMMAND);
        assert_eq!(ShimArgs::parse(&argv).unwrap(), a);
        assert!(ShimArgs::parse(&["--bundle".into()]).is_err());
        assert!(ShimArgs::parse(&["--what".into(), "x".into()]).is_err());
        assert!(ShimArgs::parse(&[]).is_err());
        let plain = ShimArgs {
            stdio: StdioMode::default(),
            ..a
        };
        assert!(!plain.to_argv().iter().any(|s| s == "--stdio"));
        assert!(StdioMode::parse("tty").unwrap().attachable());
        assert!(!StdioMode::parse("").unwrap().attachable());
        assert!(StdioMode::parse("tty,bogus").is_err());
    }

    #[test]
    fn oom_counter_of_missing_cgroup_is_none() {
        assert_eq!(oom_kills("/navarch/does-not-exist/xyz"), None);
    }
}
