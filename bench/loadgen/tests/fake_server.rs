//! The load generator against a small in-process fake API server (TLS with a
//! mandatory client certificate, HTTP/1.1 and HTTP/2), checking that requests
//! are counted and watch events are matched to creates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use navarch_loadgen::crud::{self, LoadSpec, Op};
use navarch_loadgen::watch::{self, WatchReader, WatchSpec};
use navarch_loadgen::{Protocol, Target};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use tokio::sync::broadcast;

struct Pems {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pems() -> Pems {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let leaf = |sans: Vec<String>, cn: &str, eku| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into()],
        "server",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(vec![], "admin", ExtendedKeyUsagePurpose::ClientAuth);
    Pems {
        ca: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn server_tls(p: &Pems) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut p.ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = rustls_pemfile::certs(&mut p.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut p.server_key.as_bytes())
        .unwrap()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r
}

#[derive(Default)]
struct Counters {
    creates: AtomicU64,
    gets: AtomicU64,
}

async fn handle(
    req: Request<Incoming>,
    events: broadcast::Sender<Bytes>,
    counters: Arc<Counters>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    match (method, path.as_str()) {
        (Method::POST, "/api/v1/namespaces") => full(StatusCode::CONFLICT, "{}"),
        (Method::POST, p) if p.ends_with("/configmaps") => {
            counters.creates.fetch_add(1, Ordering::Relaxed);
            full(StatusCode::CREATED, "{}")
        }
        (Method::GET, p) if p.contains("/configmaps/") => {
            counters.gets.fetch_add(1, Ordering::Relaxed);
            if p.contains("/configmaps/missing") {
                full(StatusCode::NOT_FOUND, "{}")
            } else {
                full(StatusCode::OK, "{}")
            }
        }
        (Method::POST, p) if p.ends_with("/pods") => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            // A MODIFIED event and an unrelated pod must be ignored.
            let _ = events.send(Bytes::from(format!(
                "{{\"type\":\"ADDED\",\"object\":{{\"metadata\":{{\"name\":\"{name}\"}}}}}}\n\
                 {{\"type\":\"MODIFIED\",\"object\":{{\"metadata\":{{\"name\":\"{name}\"}}}}}}\n\
                 {{\"type\":\"ADDED\",\"object\":{{\"metadata\":{{\"name\":\"other\"}}}}}}\n"
            )));
            full(StatusCode::CREATED, "{}")
        }
        (Method::GET, p) if p.ends_with("/pods") && query.contains("watch=true") => {
            assert!(query.contains("resourceVersion=7"), "query {query}");
            let rx = events.subscribe();
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Ok(b) => Some((Ok::<_, Infallible>(Frame::data(b)), rx)),
                    Err(_) => None,
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        (Method::GET, p) if p.ends_with("/pods") => full(
            StatusCode::OK,
            r#"{"kind":"PodList","metadata":{"resourceVersion":"7"},"items":[]}"#,
        ),
        _ => full(StatusCode::NOT_FOUND, "{}"),
    }
}

async fn start_server(p: &Pems) -> (SocketAddr, Arc<Counters>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(p));
    let (events, _) = broadcast::channel::<Bytes>(4096);
    let counters = Arc::new(Counters::default());
    let c2 = counters.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let events = events.clone();
            let counters = c2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let events = events.clone();
                    let counters = counters.clone();
                    async move { Ok::<_, Infallible>(handle(req, events, counters).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, counters)
}

fn target(p: &Pems, addr: SocketAddr, protocol: Protocol) -> Target {
    Target::new(
        addr,
        protocol,
        p.ca.as_bytes(),
        p.client_cert.as_bytes(),
        p.client_key.as_bytes(),
    )
    .unwrap()
}

fn load_spec(op: Op, max: u64) -> LoadSpec {
    LoadSpec {
        op,
        clients: 4,
        duration: Duration::from_secs(30),
        max_requests: Some(max),
        namespace: "bench".into(),
        prefix: "cm-".into(),
        start_index: 0,
        value_bytes: 500,
        existing: 10,
    }
}

#[tokio::test]
async fn creates_and_gets_are_counted_over_both_protocols() {
    let p = pems();
    let (addr, counters) = start_server(&p).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let t = target(&p, addr, protocol);
        let r = crud::run(&t, &load_spec(Op::Create, 50)).await.unwrap();
        assert_eq!(r.ok, 50, "{protocol:?}");
        assert_eq!(r.errors, 0);
        assert_eq!(r.latency_us.count(), 50);
        assert!(r.per_sec() > 0.0);
        let r = crud::run(&t, &load_spec(Op::Get, 40)).await.unwrap();
        assert_eq!(r.ok, 40);
        assert_eq!(r.errors, 0);
        crud::ensure_namespace(&t, "bench").await.unwrap();
    }
    assert_eq!(counters.creates.load(Ordering::Relaxed), 100);
    assert_eq!(counters.gets.load(Ordering::Relaxed), 80);
}

#[tokio::test]
async fn failed_requests_are_errors() {
    let p = pems();
    let (addr, _) = start_server(&p).await;
    let t = target(&p, addr, Protocol::Http2);
    let mut spec = load_spec(Op::Get, 8);
    spec.prefix = "missing".into();
    spec.existing = 3;
    let r = crud::run(&t, &spec).await.unwrap();
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors, 8);
    assert_eq!(r.latency_us.count(), 0);
    let first = r.first_error.unwrap();
    assert!(first.contains("404"), "{first}");
    let bad = Target::new(
        addr,
        Protocol::Http2,
        pems().ca.as_bytes(),
        p.client_cert.as_bytes(),
        p.client_key.as_bytes(),
    )
    .unwrap();
    assert!(
        bad.connect().await.is_err(),
        "untrusted server cert accepted"
    );
    assert!(crud::run(&t, &LoadSpec { clients: 0, ..spec })
        .await
        .is_err());
}

#[tokio::test]
async fn watch_events_are_matched_to_creates() {
    let p = pems();
    let (addr, _) = start_server(&p).await;
    let per_pod = std::env::temp_dir().join(format!("loadgen-per-pod-{}", std::process::id()));
    // The epoll reader speaks HTTP/1.1 whatever the target's protocol (which
    // its creators use).
    for (protocol, watchers, per_conn, reader) in [
        (Protocol::Http1, 5, 1, WatchReader::Tasks),
        (Protocol::Http2, 7, 3, WatchReader::Tasks),
        (Protocol::Http2, 6, 1, WatchReader::Epoll),
    ] {
        let t = target(&p, addr, protocol);
        let spec = WatchSpec {
            watchers,
            watchers_per_conn: per_conn,
            rate: 50.0,
            duration: Duration::from_millis(200),
            creators: 2,
            namespace: "w".into(),
            prefix: "bw-".into(),
            grace: Duration::from_secs(5),
            per_pod_file: Some(per_pod.clone()),
            reader,
        };
        let r = watch::run(&t, &spec).await.unwrap();
        let lines = std::fs::read_to_string(&per_pod).unwrap();
        assert_eq!(
            lines.lines().count(),
            11,
            "header and one line per pod: {lines}"
        );
        assert_eq!(r.created, 10, "{protocol:?} {reader:?}");
        assert_eq!(r.watchers, watchers as u64);
        assert_eq!(r.expected_events, 10 * watchers as u64);
        assert_eq!(r.received_events, r.expected_events);
        assert_eq!(r.delay_from_send_us.count(), r.received_events);
        assert_eq!(r.delay_from_response_us.count(), r.received_events);
        assert!(r.delay_from_response_us.max() < 5_000_000);
        assert_eq!(r.watch_errors, 0);
    }
    let _ = std::fs::remove_file(&per_pod);
}
