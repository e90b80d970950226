//! Issue 3, "Done means": an image pushed to a local `docker-registry` (Debian's
//! package, installed by `scripts/setup.sh`) is pulled by the node and run, end
//! to end through `kubectl`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{test_image, Cluster};

/// A `docker-registry serve` on a free loopback port with its own storage dir;
/// killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn start_registry() -> Registry {
    for tool in ["docker-registry", "skopeo"] {
        assert!(
            have(tool),
            "`{tool}` is not installed: run scripts/setup.sh first"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = dir.path().join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        ),
    )
    .expect("write registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let reg = Registry {
        child,
        port,
        _dir: dir,
    };
    let listening = common::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    assert!(
        listening.is_some(),
        "docker-registry did not listen on 127.0.0.1:{port}"
    );
    reg
}

/// `skopeo copy` the test image (an oci-archive) to `docker://<dest>`.
fn push(archive: &Path, dest: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy to {dest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_pushed_to_a_local_registry_is_pulled_and_run() {
    let reg = start_registry();
    let image = format!("127.0.0.1:{}/busybox:1", reg.port);
    push(&test_image(), &image);

    let c = Cluster::start_with_node();
    c.ok(&[
        "run",
        "reg",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "echo pulled-from-registry; sleep 3600",
    ]);
    c.wait_for(
        &["get", "pod", "reg", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(60),
        |s| s == "Running",
    );
    let logs = c.wait_for(&["logs", "reg"], Duration::from_secs(10), |s| {
        s.contains("pulled-from-registry")
    });
    assert_eq!(logs.trim(), "pulled-from-registry");

    // The node's image store now knows the image by the registry's name and
    // digest, and the pod's imageID names the repository it was pulled from
    // (the harness preloads the same busybox image under another name).
    let image_id = c.ok(&[
        "get",
        "pod",
        "reg",
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ]);
    assert!(
        image_id.starts_with(&format!("127.0.0.1:{}/busybox@sha256:", reg.port)),
        "{image_id}"
    );
    let db = std::fs::read_to_string(c.data_dir().join("runtime/images/images.json"))
        .expect("read the node's image db");
    assert!(db.contains(&format!("\"{image}\"")), "{db}");
    assert!(
        db.contains(&format!("127.0.0.1:{}/busybox@sha256:", reg.port)),
        "{db}"
    );

    // The story of the pull in `kubectl describe`.
    let describe = c.ok(&["describe", "pod", "reg"]);
    for needle in [
        "Pulling".to_string(),
        format!("Pulling image \"{image}\""),
        "Pulled".to_string(),
        format!("Successfully pulled image \"{image}\""),
        "Created".to_string(),
        "Started".to_string(),
    ] {
        assert!(describe.contains(&needle), "{needle} missing:\n{describe}");
    }

    // A second pod with the same image does not pull again (IfNotPresent for a
    // non-latest tag), even with the registry gone.
    drop(reg);
    c.ok(&[
        "run",
        "reg2",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "echo again; sleep 3600",
    ]);
    c.wait_for(
        &["get", "pod", "reg2", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(60),
        |s| s == "Running",
    );
    let describe = c.ok(&["describe", "pod", "reg2"]);
    assert!(
        describe.contains("already present on machine"),
        "{describe}"
    );
}

#[test]
fn missing_image_in_a_reachable_registry_goes_to_image_pull_back_off() {
    let reg = start_registry();
    let c = Cluster::start_with_node();
    let image = format!("127.0.0.1:{}/busybox:does-not-exist", reg.port);
    c.ok(&["run", "missing", &format!("--image={image}")]);
    let reason_query = [
        "get",
        "pod",
        "missing",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
    ];
    c.wait_for(&reason_query, Duration::from_secs(60), |s| {
        s == "ErrImagePull" || s == "ImagePullBackOff"
    });
    c.wait_for(&reason_query, Duration::from_secs(60), |s| {
        s == "ImagePullBackOff"
    });
    let describe = c.ok(&["describe", "pod", "missing"]);
    assert!(
        describe.contains(&format!("Failed to pull image \"{image}\""))
            && describe.contains("ErrImagePull")
            && describe.contains("Back-off pulling image"),
        "{describe}"
    );
    let phase = c.ok(&["get", "pod", "missing", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Pending");
}
