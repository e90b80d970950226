//! navarch-apiserver: a Kubernetes-compatible API server.
//!
//! One generic REST handler ([`handler`]) serves every resource in the catalog,
//! driven by per-resource strategies ([`strategy`]) over a generic registry
//! ([`registry`]) that persists objects in a revisioned [`navarch_store::Store`].
//! Watches are fed by one decoded event stream per resource ([`watchcache`]).

pub mod admission;
pub mod alloc;
pub mod auth;
pub mod body;
pub mod conversion;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod join;
pub mod memtrim;
pub mod nodeproxy;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod printers;
pub mod registry;
pub mod request;
pub mod reviews;
pub mod server;
pub mod strategy;
pub mod streaming;
pub mod subresources;
pub mod watch;
pub mod watchcache;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use navarch_api::catalog;
use navarch_store::Store;
use serde_json::json;

/// How to run the API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind_address: std::net::IpAddr,
    pub https_port: u16,
    /// Extra names/IPs for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Serve HTTP/1.1 watches from the watch hub thread (see
    /// `watch::direct`); `false` leaves every request to hyper.
    pub watch_hub: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("pki: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("store: {0}")]
    Store(#[from] navarch_store::StoreError),
    #[error("api: {0}")]
    Api(#[from] error::ApiError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A started API server.
pub struct Running {
    pub addr: SocketAddr,
    /// The cluster's certificates (the embedded node agent's serving cert comes from here).
    pub pki: Arc<pki::Pki>,
    /// Token other nodes join with (`navarch agent --token`).
    pub join_token: String,
    pub kubeconfig: PathBuf,
    pub app: Arc<handler::App>,
}

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn bootstrap(reg: &registry::Registry) -> Result<(), error::ApiError> {
    let opts = registry::WriteOptions::default();
    if let Some(ns_rt) = catalog::by_plural("", "v1", "namespaces") {
        for ns in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match reg.create(ns_rt, None, obj, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(svc) = catalog::by_plural("", "v1", "services") {
        // Cluster DNS: each node's DNS server answers on this IP (the service proxy
        // sends 10.43.0.10:53 to the node-local server).
        if reg.get(svc, Some("kube-system"), "kube-dns").await.is_err() {
            let dns = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                             "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
                "spec": {"clusterIP": "10.43.0.10", "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}
            });
            match reg.create(svc, Some("kube-system"), dns, &opts).await {
                Ok(_) | Err(error::ApiError { code: 409, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if reg.get(svc, Some("default"), "kubernetes").await.is_ok() {
            return Ok(());
        }
        let obj = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        });
        match reg.create(svc, Some("default"), obj, &opts).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open the store, prepare certificates and kubeconfig, and start serving.
pub async fn start(cfg: ServerConfig, store: Arc<dyn Store>) -> Result<Running, ServerError> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let pki = pki::Pki::load_or_create(&cfg.data_dir.join("pki"), &cfg.tls_sans)?;
    let tls = pki.server_config()?;
    let registry = registry::Registry::new(store.clone()).await?;
    bootstrap(&registry).await?;
    let mut auth = auth::Authenticator::load(&cfg.data_dir.join("tokens.csv"))?;
    let join_token = join::ensure_token(&cfg.data_dir, &pki, &mut auth)?;
    let node_client = nodeproxy::NodeClient::new(pki.client_config(&pki.node_client()?)?);
    let pki = Arc::new(pki);
    let app = Arc::new(handler::App {
        node_client,
        pki: pki.clone(),
        registry,
        discovery: discovery::Discovery::build(),
        openapi: openapi::LazyOpenApiDocs::default(),
        auth,
    });
    let listener = tokio::net::TcpListener::bind((cfg.bind_address, cfg.https_port)).await?;
    let addr = listener.local_addr()?;
    let host = if cfg.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.bind_address.to_string()
    };
    let kubeconfig = cfg.data_dir.join("kubeconfig");
    let text = pki.kubeconfig(
        &format!("https://{host}:{}", addr.port()),
        "admin",
        &pki.admin,
    );
    pki::write_private(&kubeconfig, text.as_bytes())?;
    let direct = if cfg.watch_hub {
        Some(watch::direct::DirectWatches::start()?)
    } else {
        None
    };
    tokio::spawn(server::serve(listener, tls, app.clone(), direct));
    tokio::spawn(compactor(store));
    if let Err(e) = memtrim::spawn_trimmer(memtrim::TRIM_EVERY) {
        tracing::warn!(error = %e, "cannot start the heap trimmer");
    }
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server listening");
    Ok(Running {
        addr,
        kubeconfig,
        app,
        pki,
        join_token,
    })
}

/// Every five minutes, compact history older than the revision seen five minutes
/// earlier (upstream's default compaction interval).
async fn compactor(store: Arc<dyn Store>) {
    let period = std::time::Duration::from_secs(300);
    let mut previous = store.current_revision();
    loop {
        tokio::time::sleep(period).await;
        if previous > store.compacted_revision() {
            if let Err(e) = store.compact(previous).await {
                tracing::warn!(error = %e, "compaction failed");
            }
        }
        previous = store.current_revision();
    }
}
