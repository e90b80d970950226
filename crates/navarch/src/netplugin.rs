//! Pod networking for the node agent: an adapter from the agent's network hook
//! to `navarch-network`'s bridge plugin. The bridge needs the node's podCIDR,
//! which the node IPAM controller assigns only after the agent has registered the
//! Node, so the plugin starts in the background and pod setups wait for it.
//!
//! The caller first takes the host's pod network ([`HostLock`], one bridge
//! node per network namespace); what a node with another data dir left behind
//! is removed before the bridge is set up.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use navarch_agent::sync::NetworkPlugin;
use navarch_network::cidr::Ipv4Cidr;
use navarch_network::host::HostLock;
use navarch_network::pod::{BridgeNetwork, PodInfo, PodNetwork};
use navarch_runtime::Sandbox;
use tokio::sync::watch;

pub struct BridgePlugin {
    ready: watch::Receiver<Option<Arc<BridgeNetwork>>>,
    client: kube::Client,
}

impl BridgePlugin {
    /// Start the node's network (bridge, routes, service proxy, DNS) in the
    /// background. `lock` is the host's pod network, taken for `data_dir`; it is
    /// held for the life of the process.
    pub fn start(
        client: kube::Client,
        node_name: String,
        data_dir: std::path::PathBuf,
        cluster_cidr: Ipv4Cidr,
        lock: HostLock,
    ) -> BridgePlugin {
        let (tx, rx) = watch::channel(None);
        let api_client = client.clone();
        tokio::spawn(async move {
            let state_dir = data_dir.join("network");
            let mut cfg = match navarch_network::node::NodeNetworkConfig::new(&node_name, state_dir)
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "pod network configuration");
                    return;
                }
            };
            cfg.cluster_cidr = cluster_cidr;
            if lock.inherits_foreign_state(&data_dir) {
                let prev = lock.previous_owner().map(|p| p.display().to_string());
                tracing::info!(previous = ?prev, "removing the pod network another node left");
                if let Err(e) = navarch_network::host::teardown_node(
                    &cfg.node,
                    navarch_network::pod::DEFAULT_BRIDGE,
                )
                .await
                {
                    tracing::warn!(error = %e, "removing the previous pod network");
                }
            }
            match navarch_network::node::start(client, cfg).await {
                Ok(net) => {
                    tracing::info!(pod_cidr = %net.pod_cidr, "pod network ready");
                    let _ = tx.send(Some(net.plugin.clone()));
                    // Keep the node network (proxy, DNS, routes) and the host
                    // lock alive for the life of the process.
                    std::mem::forget(net);
                    std::mem::forget(lock);
                }
                Err(e) => tracing::error!(error = %e, "pod network failed to start"),
            }
        });
        BridgePlugin {
            ready: rx,
            client: api_client,
        }
    }

    async fn plugin(&self) -> Result<Arc<BridgeNetwork>, String> {
        let mut rx = self.ready.clone();
        let got = tokio::time::timeout(Duration::from_secs(30), async {
            rx.wait_for(|p| p.is_some())
                .await
                .ok()
                .and_then(|p| p.clone())
        })
        .await;
        match got {
            Ok(Some(p)) => Ok(p),
            _ => Err("pod network not ready: no podCIDR assigned to this node yet".to_string()),
        }
    }
}

#[async_trait::async_trait]
impl NetworkPlugin for BridgePlugin {
    async fn setup(&self, pod: &Pod, sandbox: &Sandbox) -> Result<Vec<String>, String> {
        let ns = sandbox
            .netns_path
            .clone()
            .ok_or("sandbox has no network namespace")?;
        let plugin = self.plugin().await?;
        plugin
            .setup(&PodInfo::from_pod(pod, ns))
            .await
            .map(|ips| ips.to_strings())
            .map_err(|e| e.to_string())
    }

    async fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        use k8s_openapi::api::core::v1::Service;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        // Upstream: the namespace's services unless enableServiceLinks is
        // false; default/kubernetes always.
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
        let mut services = Vec::new();
        if links {
            let api: kube::Api<Service> = kube::Api::namespaced(self.client.clone(), ns);
            match api.list(&Default::default()).await {
                Ok(list) => services.extend(list.items),
                Err(e) => tracing::warn!(namespace = ns, error = %e, "listing services for env"),
            }
        }
        if ns != "default" || !links {
            let api: kube::Api<Service> = kube::Api::namespaced(self.client.clone(), "default");
            if let Ok(Some(k)) = api.get_opt("kubernetes").await {
                services.push(k);
            }
        }
        navarch_network::env::service_env(&services, ns)
    }

    async fn teardown(&self, pod_uid: &str, sandbox: &Sandbox) {
        let Ok(plugin) = self.plugin().await else {
            return;
        };
        if let Err(e) = plugin
            .teardown(pod_uid, sandbox.netns_path.as_deref())
            .await
        {
            tracing::warn!(pod = pod_uid, error = %e, "pod network teardown");
        }
    }
}
