//! Issue 5 (terminal half): kubectl exec / attach / cp / port-forward through
//! the API server to the node agent, with the real kubectl and Python client.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, TEST_IMAGE};

const WEB: &str =
    "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 80 -h /www";

/// Wait (30 s at most) for `pod` to be Running.
fn wait_running(c: &Cluster, pod: &str) {
    c.wait_for(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |s| s == "Running",
    );
}

fn start_web_pod(c: &Cluster) {
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  containers:\n  - name: app\n    image: {TEST_IMAGE}\n    command: [\"sh\", \"-c\", {WEB:?}]\n    ports:\n    - containerPort: 80\n"
    ));
    wait_running(c, "web");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET / on localhost:`port` with a raw HTTP/1.0 request.
fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Port-forward to `target` and fetch the page twice; `spdy_only` makes
/// kubectl skip the WebSocket tunnel and speak SPDY over an HTTP upgrade.
fn port_forward_and_fetch(c: &Cluster, target: &str, spdy_only: bool) {
    let port = free_port();
    let mut cmd = c.kubectl_cmd();
    if spdy_only {
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    let mut child = cmd
        .args(["port-forward", target, &format!("{port}:80")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let page = common::eventually(Duration::from_secs(15), || {
        http_get(port).filter(|p| p.contains("hello-from-pod"))
    });
    // a second connection over the same session
    let again = page.as_ref().and_then(|_| http_get(port));
    let _ = child.kill();
    let out = child.wait_with_output().expect("port-forward output");
    assert!(
        page.is_some(),
        "no page through port-forward {target}:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    assert!(again.unwrap_or_default().contains("hello-from-pod"));
}

#[test]
fn exec_attach_cp_and_port_forward() {
    let c = Cluster::start_with_node();
    start_web_pod(&c);

    // plain exec
    let out = c.ok(&["exec", "web", "--", "echo", "hi"]);
    assert_eq!(out, "hi\n");

    // round trip time (informational; the goal is <= 50 ms without kubectl startup)
    let t = Instant::now();
    c.ok(&["exec", "web", "--", "true"]);
    eprintln!("kubectl exec round trip: {:?}", t.elapsed());

    // exit codes
    let out = c.kubectl(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("err"), "{stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );

    // stdin
    let out = c.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], "hi\nthere\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nthere\n");

    // a missing container is a 4xx from the API server
    let err = c.fails(&["exec", "web", "-c", "nope", "--", "true"]);
    assert!(err.contains("container nope is not valid"), "{err}");

    // kubectl cp in and out (tar over exec)
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("in.txt");
    std::fs::write(&local, "copied content\n").expect("write");
    c.ok(&["cp", local.to_str().unwrap_or_default(), "web:/tmp/in.txt"]);
    assert_eq!(
        c.ok(&["exec", "web", "--", "cat", "/tmp/in.txt"]),
        "copied content\n"
    );
    let back = dir.path().join("back.txt");
    c.ok(&["cp", "web:/tmp/in.txt", back.to_str().unwrap_or_default()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap_or_default(),
        "copied content\n"
    );

    // -it under a pseudo-terminal (`script` allocates one for kubectl)
    let cmdline = format!(
        "printf 'echo tty-$((6*7))\\nexit 5\\n' | kubectl --kubeconfig {} exec -it web -- sh",
        c.kubeconfig().display()
    );
    let out = Command::new("script")
        .args(["-qefc", &cmdline, "/dev/null"])
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tty-42"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // attach streams new output of the main process (httpd logs nothing, so
    // use a talker pod)
    c.ok(&[
        "run",
        "talker",
        &format!("--image={TEST_IMAGE}"),
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done",
    ]);
    wait_running(&c, "talker");
    let mut attach = c
        .kubectl_cmd()
        .args(["attach", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let mut buf = [0u8; 256];
    let mut seen = String::new();
    let mut so = attach.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("tick-") && Instant::now() < deadline {
        match so.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(seen.contains("tick-"), "attach saw: {seen:?}");

    // port-forward to the pod and to a service
    port_forward_and_fetch(&c, "pod/web", false);
    port_forward_and_fetch(&c, "pod/web", true);
    c.ok(&["expose", "pod", "web", "--port=80", "--name=websvc"]);
    port_forward_and_fetch(&c, "svc/websvc", false);

    // the Python client: exec and port-forward
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stream_smoke.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python stream smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl run -i` / `kubectl attach -i` feed the main process's stdin
/// (stdinOnce closes it when kubectl's input ends), and `attach -it` drives a
/// container with a terminal.
#[test]
fn attach_stdin_and_tty() {
    let c = Cluster::start_with_node();

    // kubectl run -i --rm: stdin reaches the process, EOF closes it, the pod goes.
    let out = c.kubectl_stdin(
        &[
            "run",
            "reader",
            "-i",
            "--rm",
            "--restart=Never",
            &format!("--image={TEST_IMAGE}"),
            "--",
            "sh",
            "-c",
            "read a; echo got-$a; cat; echo end-of-input",
        ],
        "one\ntwo\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("got-one"), "{text}\n{err}");
    assert!(text.contains("two"), "{text}\n{err}");
    assert!(text.contains("end-of-input"), "{text}\n{err}");
    assert!(text.contains("pod \"reader\" deleted"), "{text}\n{err}");

    // A pod with a terminal: kubectl attach -it under a pseudo-terminal.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shell\nspec:\n  restartPolicy: Never\n  containers:\n  - name: sh\n    image: {TEST_IMAGE}\n    command: [\"sh\"]\n    stdin: true\n    tty: true\n"
    ));
    wait_running(&c, "shell");
    let cmdline = format!(
        "kubectl --kubeconfig {} attach -it shell",
        c.kubeconfig().display()
    );
    let mut child = Command::new("script")
        .args(["-qefc", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    // Give kubectl time to attach and switch its terminal to raw mode.
    std::thread::sleep(Duration::from_secs(2));
    stdin
        .write_all(b"tty; echo attached-$((6*7))\n")
        .expect("write");
    std::thread::sleep(Duration::from_secs(1));
    stdin.write_all(b"exit 4\n").expect("write");
    let out = child.wait_with_output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("attached-42"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("/dev/pts/"), "{text}");
    c.wait_for(
        &[
            "get",
            "pod",
            "shell",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        Duration::from_secs(30),
        |s| s == "4",
    );
}
