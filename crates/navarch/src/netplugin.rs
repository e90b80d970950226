//! Pod networking for the node agent: an adapter from the agent's network hook
//! to `navarch-network`'s bridge plugin. The bridge needs the node's podCIDR,
//! which the node IPAM controller assigns only after the agent has registered the
//! Node, so the plugin starts in the background and pod setups wait for it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use navarch_agent::sync::NetworkPlugin;
use navarch_network::pod::{BridgeNetwork, PodInfo, PodNetwork};
use navarch_runtime::Sandbox;
use tokio::sync::watch;

pub struct BridgePlugin {
    ready: watch::Receiver<Option<Arc<BridgeNetwork>>>,
}

impl BridgePlugin {
    /// Start the node's network (bridge, routes, service proxy, DNS) in the background.
    pub fn start(
        client: kube::Client,
        node_name: String,
        state_dir: std::path::PathBuf,
    ) -> BridgePlugin {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let cfg = match navarch_network::node::NodeNetworkConfig::new(&node_name, state_dir) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "pod network configuration");
                    return;
                }
            };
            match navarch_network::node::start(client, cfg).await {
                Ok(net) => {
                    tracing::info!(pod_cidr = %net.pod_cidr, "pod network ready");
                    let _ = tx.send(Some(net.plugin.clone()));
                    // Keep the node network (proxy, DNS, routes) alive.
                    std::mem::forget(net);
                }
                Err(e) => tracing::error!(error = %e, "pod network failed to start"),
            }
        });
        BridgePlugin { ready: rx }
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
