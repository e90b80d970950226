//! The log endpoint over mutual TLS, against the fake runtime.

mod common;

use std::sync::Arc;

use common::fake::Fake;
use navarch_runtime::{ContainerConfig, ContainerRuntime, SandboxConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test-ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |sans: Vec<String>, eku, issuer: &Issuer<KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, "x");
        p.extended_key_usages = vec![eku];
        let c = p.signed_by(&key, issuer).unwrap();
        (c.pem(), key.serialize_pem())
    };
    let server = leaf(
        vec!["localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    );
    let client = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other, other_key);
    let stranger = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, &other_issuer);
    Pki {
        ca_pem: ca_cert.pem(),
        server,
        client,
        stranger,
    }
}

async fn get(
    port: u16,
    ca_pem: &str,
    ident: &(String, String),
    path: &str,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = rustls_pemfile::certs(&mut ident.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut ident.1.as_bytes())
        .unwrap()
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = conn.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

#[tokio::test]
async fn serves_logs_to_authenticated_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let write = |n: &str, s: &str| {
        let path = dir.path().join(n);
        std::fs::write(&path, s).unwrap();
        path
    };
    let cert = write("server.crt", &p.server.0);
    let key = write("server.key", &p.server.1);
    let ca = write("ca.crt", &p.ca_pem);

    let fake = Fake::new();
    let sb = fake
        .create_sandbox(&SandboxConfig {
            pod_uid: "u1".into(),
            pod_name: "bb".into(),
            namespace: "default".into(),
            hostname: "bb".into(),
            host_network: false,
            share_pid: false,
            cgroup_parent: String::new(),
            limits: Default::default(),
            labels: Default::default(),
        })
        .await
        .unwrap();
    let labels: std::collections::BTreeMap<String, String> = [
        ("io.kubernetes.pod.uid", "u1"),
        ("io.kubernetes.pod.name", "bb"),
        ("io.kubernetes.pod.namespace", "default"),
        ("io.kubernetes.container.name", "app"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for attempt in 0..2u32 {
        let log_path = dir.path().join(format!("app-{attempt}.log"));
        let id = fake
            .create_container(
                &sb,
                &ContainerConfig {
                    name: "app".into(),
                    attempt,
                    argv: vec!["exit".into(), "0".into()],
                    log_path: log_path.clone(),
                    labels: labels.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        std::fs::write(
            &log_path,
            format!("2024-01-02T03:04:05.123456789Z stdout F attempt {attempt} line 1\n2024-01-02T03:04:06Z stderr F attempt {attempt} line 2\n"),
        )
        .unwrap();
    }

    let tls = navarch_agent::logs::server_config(&cert, &key, Some(&ca)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(navarch_agent::logs::serve(
        listener,
        tls,
        Arc::new(fake.clone()),
        dir.path().to_path_buf(),
    ));

    let r = get(port, &p.ca_pem, &p.client, "/containerLogs/default/bb/app")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("attempt 1 line 1\nattempt 1 line 2\n"), "{r}");

    let r = get(
        port,
        &p.ca_pem,
        &p.client,
        "/containerLogs/default/bb/app?previous=true&tailLines=1&timestamps=true",
    )
    .await
    .unwrap();
    assert!(
        r.ends_with("\r\n\r\n2024-01-02T03:04:06.000000000Z attempt 0 line 2\n"),
        "{r}"
    );

    let r = get(port, &p.ca_pem, &p.client, "/containerLogs/default/bb/nope")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");

    // a client certificate from another CA is refused
    let r = get(
        port,
        &p.ca_pem,
        &p.stranger,
        "/containerLogs/default/bb/app",
    )
    .await;
    assert!(
        r.is_err() || r.as_deref().is_ok_and(|s| s.is_empty()),
        "{r:?}"
    );
}

#[tokio::test]
async fn follows_a_running_container() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let write = |n: &str, s: &str| {
        let path = dir.path().join(n);
        std::fs::write(&path, s).unwrap();
        path
    };
    let cert = write("server.crt", &p.server.0);
    let key = write("server.key", &p.server.1);
    let ca = write("ca.crt", &p.ca_pem);
    let fake = Fake::new();
    let sb = fake
        .create_sandbox(&SandboxConfig {
            pod_uid: "u2".into(),
            pod_name: "tail".into(),
            namespace: "ns".into(),
            hostname: "tail".into(),
            host_network: false,
            share_pid: false,
            cgroup_parent: String::new(),
            limits: Default::default(),
            labels: Default::default(),
        })
        .await
        .unwrap();
    let labels: std::collections::BTreeMap<String, String> = [
        ("io.kubernetes.pod.name", "tail"),
        ("io.kubernetes.pod.namespace", "ns"),
        ("io.kubernetes.container.name", "app"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let log_path = dir.path().join("tail.log");
    let id = fake
        .create_container(
            &sb,
            &ContainerConfig {
                name: "app".into(),
                argv: vec!["sleep".into()],
                log_path: log_path.clone(),
                labels,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    let tls = navarch_agent::logs::server_config(&cert, &key, Some(&ca)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(navarch_agent::logs::serve(
        listener,
        tls,
        Arc::new(fake.clone()),
        dir.path().to_path_buf(),
    ));

    let ca_pem = p.ca_pem.clone();
    let client = p.client.clone();
    let req = tokio::spawn(async move {
        get(
            port,
            &ca_pem,
            &client,
            "/containerLogs/ns/tail/app?follow=true",
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .unwrap();
        writeln!(f, "2024-01-02T03:04:05Z stdout F appended later").unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    fake.stop_container(&id, std::time::Duration::ZERO)
        .await
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), req)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(out.contains("started sleep"), "{out}");
    assert!(out.contains("appended later"), "{out}");
}
