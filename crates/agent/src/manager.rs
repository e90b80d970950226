//! The pod manager: watches the pods bound to this node (field selector
//! `spec.nodeName=<node>`), runs one worker task per pod (syncs of one pod never
//! overlap; updates that arrive during a sync coalesce into one more sync), and
//! relists the runtime every second to wake the workers of pods whose containers
//! changed state (upstream's PLEG).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use navarch_runtime::ContainerState;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::labels;
use crate::sync::{Context, Next, PodState};
use crate::AgentError;

struct Worker {
    tx: watch::Sender<Option<Arc<Pod>>>,
    poke: Arc<Notify>,
}

type Workers = Arc<Mutex<HashMap<String, Worker>>>;

/// Run the manager until the process ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), AgentError> {
    let workers: Workers = Arc::default();
    tokio::spawn(pleg(ctx.clone(), workers.clone()));
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut stream = watcher(api, cfg).boxed();
    let mut init_seen: HashSet<String> = HashSet::new();
    let mut first_list = true;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    init_seen.insert(uid.clone());
                    dispatch(&ctx, &workers, &uid, Some(Arc::new(pod)));
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    dispatch(&ctx, &workers, &uid, None);
                }
            }
            Ok(watcher::Event::Init) => init_seen.clear(),
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<String> = workers
                    .lock()
                    .keys()
                    .filter(|k| !init_seen.contains(*k))
                    .cloned()
                    .collect();
                for uid in gone {
                    dispatch(&ctx, &workers, &uid, None);
                }
                if first_list {
                    first_list = false;
                    tokio::spawn(remove_orphans(
                        ctx.clone(),
                        workers.clone(),
                        init_seen.clone(),
                    ));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}

/// Hand the latest version of a pod (or its disappearance) to its worker,
/// starting one if needed.
fn dispatch(ctx: &Arc<Context>, workers: &Workers, uid: &str, pod: Option<Arc<Pod>>) {
    let mut map = workers.lock();
    if let Some(w) = map.get(uid) {
        w.tx.send_replace(pod);
        return;
    }
    let Some(pod) = pod else {
        // unknown and gone: clean up whatever the runtime may still hold
        let ctx = ctx.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            let mut st = PodState::default();
            ctx.sync(&uid, None, &mut st).await;
        });
        return;
    };
    let (tx, rx) = watch::channel(Some(pod));
    let poke = Arc::new(Notify::new());
    map.insert(
        uid.to_string(),
        Worker {
            tx,
            poke: poke.clone(),
        },
    );
    tokio::spawn(worker(
        ctx.clone(),
        workers.clone(),
        uid.to_string(),
        rx,
        poke,
    ));
}

async fn worker(
    ctx: Arc<Context>,
    workers: Workers,
    uid: String,
    mut rx: watch::Receiver<Option<Arc<Pod>>>,
    poke: Arc<Notify>,
) {
    let mut st = PodState::default();
    st.set_waker(poke.clone());
    loop {
        let pod = rx.borrow_and_update().clone();
        let gone = pod.is_none();
        let next = ctx.sync(&uid, pod.as_deref(), &mut st).await;
        if gone && next == Next::Idle {
            let mut map = workers.lock();
            // a new update may have raced in; only exit if still gone
            if rx.borrow().is_none() {
                map.remove(&uid);
                return;
            }
            continue;
        }
        let resync = tokio::time::Instant::now() + resync_period(pod.as_deref());
        let sleep = match next {
            Next::Idle => Some(resync),
            Next::At(at) => Some(tokio::time::Instant::from_std(at).min(resync)),
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = poke.notified() => {},
            _ = async {
                match sleep {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            } => {},
        }
    }
}

/// How often a pod is synced without any event: pods whose volumes come from
/// ConfigMaps or Secrets are refreshed every 10 s (files updated in place),
/// others every minute.
pub fn resync_period(pod: Option<&Pod>) -> Duration {
    let api_backed = pod
        .and_then(|p| p.spec.as_ref())
        .map(|s| {
            s.volumes.iter().flatten().any(|v| {
                v.config_map.is_some()
                    || v.secret.is_some()
                    || v.projected.as_ref().is_some_and(|p| {
                        p.sources
                            .iter()
                            .flatten()
                            .any(|s| s.config_map.is_some() || s.secret.is_some())
                    })
            })
        })
        .unwrap_or(false);
    if api_backed {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(60)
    }
}

/// Relist the runtime every second; wake the worker of each pod whose
/// containers changed state.
async fn pleg(ctx: Arc<Context>, workers: Workers) {
    let mut last: HashMap<String, (String, ContainerState)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(list) = ctx.runtime.list_containers().await else {
            continue;
        };
        let mut now: HashMap<String, (String, ContainerState)> = HashMap::new();
        let mut changed: HashSet<String> = HashSet::new();
        for c in list {
            let uid = c.labels.get(labels::POD_UID).cloned().unwrap_or_default();
            if last.get(&c.id).map(|(_, s)| s) != Some(&c.state) {
                changed.insert(uid.clone());
            }
            now.insert(c.id.clone(), (uid, c.state));
        }
        for (id, (uid, _)) in &last {
            if !now.contains_key(id) {
                changed.insert(uid.clone());
            }
        }
        last = now;
        let map = workers.lock();
        for uid in changed {
            if let Some(w) = map.get(&uid) {
                w.poke.notify_one();
            }
        }
    }
}

/// At start: remove containers and sandboxes of pods that no longer exist.
async fn remove_orphans(ctx: Arc<Context>, workers: Workers, live: HashSet<String>) {
    let mut uids: HashSet<String> = HashSet::new();
    if let Ok(list) = ctx.runtime.list_containers().await {
        for c in list {
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                uids.insert(uid.clone());
            }
        }
    }
    if let Ok(list) = ctx.runtime.list_sandboxes().await {
        uids.extend(list.into_iter().map(|s| s.pod_uid));
    }
    if let Ok(dirs) = std::fs::read_dir(ctx.config.root.join("pods")) {
        for d in dirs.flatten() {
            uids.insert(d.file_name().to_string_lossy().to_string());
        }
    }
    for uid in uids.difference(&live) {
        if workers.lock().contains_key(uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, "removing orphaned pod");
        let mut st = PodState::default();
        ctx.sync(uid, None, &mut st).await;
    }
}
