//! Running `ip`/`nft`/`sysctl`-style commands on the node, optionally inside a
//! given network namespace (through `nsenter --net=PATH`), and running code in a
//! network namespace on a dedicated thread (`setns` is per thread, so it is never
//! done on tokio workers).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;

/// Where node-level commands run: the current network namespace, or the one at
/// `netns` (tests use namespaces as simulated nodes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeNs {
    /// Path of the node's network namespace; `None` is the process's own.
    pub netns: Option<PathBuf>,
}

impl NodeNs {
    /// The process's own network namespace.
    pub fn host() -> Self {
        Self { netns: None }
    }

    /// A network namespace by path (e.g. `/run/netns/node1`).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            netns: Some(path.into()),
        }
    }

    /// Run `prog args...` in this namespace, returning stdout.
    pub async fn run(&self, prog: &str, args: &[&str]) -> Result<String, Error> {
        run_in(self.netns.as_deref(), prog, args, None).await
    }

    /// Run `prog args...` with `stdin` fed to it.
    pub async fn run_stdin(&self, prog: &str, args: &[&str], stdin: &str) -> Result<String, Error> {
        run_in(self.netns.as_deref(), prog, args, Some(stdin)).await
    }

    /// Apply an nftables script atomically (`nft -f -`: one transaction).
    pub async fn nft(&self, script: &str) -> Result<(), Error> {
        self.run_stdin("nft", &["-f", "-"], script)
            .await
            .map(|_| ())
    }

    /// Set a sysctl under `/proc/sys` (e.g. `net/ipv4/ip_forward`) in this namespace.
    pub async fn sysctl(&self, key: &str, value: &str) -> Result<(), Error> {
        let path = format!("/proc/sys/{key}");
        match &self.netns {
            None => std::fs::write(&path, value).map_err(|e| Error::Io(path, e)),
            Some(_) => {
                let script = format!("echo {value} > {path}");
                self.run("sh", &["-c", &script]).await.map(|_| ())
            }
        }
    }
}

/// Run `prog args...`, inside the network namespace at `netns` if given.
pub async fn run_in(
    netns: Option<&Path>,
    prog: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--").arg(prog);
            c
        }
        None => Command::new(prog),
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{prog} {}", args.join(" "));
    let mut child = cmd.spawn().map_err(|e| Error::Io(shown.clone(), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| Error::Io(shown.clone(), e))?;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Io(shown.clone(), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `f` on a new OS thread that has entered the network namespace at `netns`
/// (sockets created there stay in that namespace), and wait for its result.
pub fn in_netns<T, F>(netns: &Path, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = netns.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("navarch-netns".into())
        .spawn(move || -> Result<T, Error> {
            let file =
                std::fs::File::open(&path).map_err(|e| Error::Io(path.display().to_string(), e))?;
            // SAFETY: setns on a valid, open namespace fd; it only affects this
            // thread, which ends when `f` returns.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(Error::Io(
                    format!("setns {}", path.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(f())
        })
        .map_err(|e| Error::Io("spawn netns thread".into(), e))?;
    handle
        .join()
        .map_err(|_| Error::Netns("netns thread panicked".into()))?
}

/// [`in_netns`] from async code (the thread is waited for on the blocking pool).
pub async fn in_netns_async<T, F>(netns: PathBuf, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || in_netns(&netns, f))
        .await
        .map_err(|e| Error::Netns(e.to_string()))?
}
