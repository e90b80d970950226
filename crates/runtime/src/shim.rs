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

use crate::cri_log::{CriLogWriter, LineSplitter, LogStream};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
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

fn copy_stream(r: OwnedFd, stream: LogStream, log: Arc<Mutex<CriLogWriter>>) {
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
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let log = Arc::new(Mutex::new(CriLogWriter::open(&a.log, a.log_max)?));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut copiers = Vec::new();
    for (r, s) in [(out_r, LogStream::Stdout), (err_r, LogStream::Stderr)] {
        let log = log.clone();
        let tx = done_tx.clone();
        copiers.push(std::thread::spawn(move || {
            copy_stream(r, s, log);
            let _ = tx.send(());
        }));
    }
    drop(done_tx);
    let pid_file = a.bundle.join("pid");
    let out = Command::new(&a.runc)
        .arg("--root")
        .arg(&a.runc_root)
        .arg("--log")
        .arg(a.bundle.join("runc.log"))
        .args(["--log-format", "json", "run", "--detach", "--bundle"])
        .arg(&a.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&a.id)
        .current_dir(&a.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .output();
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
    }

    #[test]
    fn oom_counter_of_missing_cgroup_is_none() {
        assert_eq!(oom_kills("/navarch/does-not-exist/xyz"), None);
    }
}
