//! Serving the zone on UDP and TCP, forwarding other names upstream, and
//! keeping the zone current from the API (Services + EndpointSlices).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::wire::{self, WireError, RCODE_NOTIMP, RCODE_SERVFAIL};
use super::zone::{Lookup, ServiceRecord, Zone};
use crate::proxy::SERVICE_NAME_LABEL;
use crate::Error;

/// How long an upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do with a received packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this response.
    Reply(Vec<u8>),
    /// Not ours: forward the query upstream.
    Forward,
    /// Malformed: drop silently.
    Drop,
}

/// Answers queries from a shared [`Zone`].
#[derive(Clone)]
pub struct Handler {
    zone: Arc<RwLock<Zone>>,
    upstreams: Arc<Vec<SocketAddr>>,
}

impl Handler {
    /// A handler over `zone`, forwarding to `upstreams`.
    pub fn new(zone: Arc<RwLock<Zone>>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            zone,
            upstreams: Arc::new(upstreams),
        }
    }

    /// The shared zone.
    pub fn zone(&self) -> &Arc<RwLock<Zone>> {
        &self.zone
    }

    /// Answer a packet from the zone; `max` is the transport's size limit
    /// (512 for UDP without EDNS).
    pub fn answer(&self, packet: &[u8], tcp: bool) -> Outcome {
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(WireError::Malformed | WireError::NotAQuery) => return Outcome::Drop,
        };
        if q.opcode != 0 {
            return Outcome::Reply(wire::error_response(&q, RCODE_NOTIMP));
        }
        let max = if tcp {
            usize::from(u16::MAX)
        } else {
            usize::from(q.edns_size.unwrap_or(512))
        };
        let lookup = self.zone.read().lookup(&q.name, q.qtype);
        match lookup {
            Lookup::Forward => Outcome::Forward,
            Lookup::Answer(resp) => Outcome::Reply(wire::encode(&q, &resp, max)),
        }
    }

    /// Forward a query to the upstreams in order; a SERVFAIL when none answers.
    pub async fn forward(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for up in self.upstreams.iter() {
            let res = if tcp {
                forward_tcp(*up, packet).await
            } else {
                forward_udp(*up, packet).await
            };
            match res {
                Ok(r) => return Some(r),
                Err(e) => tracing::debug!(upstream = %up, error = %e, "dns: upstream failed"),
            }
        }
        let q = wire::parse_query(packet).ok()?;
        Some(wire::error_response(&q, RCODE_SERVFAIL))
    }

    /// Answer or forward; `None` when the packet is dropped.
    pub async fn handle(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        match self.answer(packet, tcp) {
            Outcome::Reply(r) => Some(r),
            Outcome::Drop => None,
            Outcome::Forward => self.forward(packet, tcp).await,
        }
    }
}

async fn forward_udp(up: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = match up.ip() {
        IpAddr::V4(_) => "0.0.0.0:0".parse().map_err(std::io::Error::other)?,
        IpAddr::V6(_) => "[::]:0".parse().map_err(std::io::Error::other)?,
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(packet).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timeout"))??;
        // Only accept the answer to our id.
        if n >= 2 && packet.len() >= 2 && buf[..2] == packet[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(up: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(up).await?;
        let len = u16::try_from(packet.len()).map_err(std::io::Error::other)?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(packet).await?;
        let n = usize::from(s.read_u16().await?);
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timeout"))?
}

/// Name servers of a resolv.conf (port 53).
pub fn upstreams_from_resolv_conf(content: &str) -> Vec<SocketAddr> {
    content
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = f.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// A DNS server bound to UDP and TCP sockets.
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    handler: Handler,
}

impl DnsServer {
    /// Bind UDP and TCP on `addr`. With port 0 both get the same free port when one
    /// can be found in a few tries (a UDP port's TCP twin may be taken by another
    /// process); failing that TCP takes any port (see [`DnsServer::local_addrs`]).
    pub async fn bind(addr: SocketAddr, handler: Handler) -> Result<Self, Error> {
        let bind_udp = |a: SocketAddr| async move {
            UdpSocket::bind(a)
                .await
                .map_err(|e| Error::Io(format!("dns udp bind {a}"), e))
        };
        let bind_tcp = |a: SocketAddr| async move {
            TcpListener::bind(a)
                .await
                .map_err(|e| Error::Io(format!("dns tcp bind {a}"), e))
        };
        if addr.port() != 0 {
            let udp = bind_udp(addr).await?;
            let tcp = bind_tcp(addr).await?;
            return Ok(Self::new(udp, tcp, handler));
        }
        for _ in 0..16 {
            let udp = bind_udp(addr).await?;
            let same = udp.local_addr().map_err(|e| Error::Io("dns".into(), e))?;
            if let Ok(tcp) = TcpListener::bind(same).await {
                return Ok(Self::new(udp, tcp, handler));
            }
        }
        let udp = bind_udp(addr).await?;
        let tcp = bind_tcp(addr).await?;
        Ok(Self::new(udp, tcp, handler))
    }

    fn new(udp: UdpSocket, tcp: TcpListener, handler: Handler) -> Self {
        Self {
            udp: Arc::new(udp),
            tcp,
            handler,
        }
    }

    /// Serve on sockets created elsewhere (e.g. bound inside another network
    /// namespace with [`crate::exec::in_netns`]); they are made non-blocking.
    /// Must be called inside a tokio runtime.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        handler: Handler,
    ) -> Result<Self, Error> {
        let io = |e| Error::Io("dns socket".into(), e);
        udp.set_nonblocking(true).map_err(io)?;
        tcp.set_nonblocking(true).map_err(io)?;
        Ok(Self {
            udp: Arc::new(UdpSocket::from_std(udp).map_err(io)?),
            tcp: TcpListener::from_std(tcp).map_err(io)?,
            handler,
        })
    }

    /// The UDP and TCP addresses.
    pub fn local_addrs(&self) -> Result<(SocketAddr, SocketAddr), Error> {
        let u = self
            .udp
            .local_addr()
            .map_err(|e| Error::Io("dns".into(), e))?;
        let t = self
            .tcp
            .local_addr()
            .map_err(|e| Error::Io("dns".into(), e))?;
        Ok((u, t))
    }

    /// Serve until the task is dropped.
    pub async fn serve(self) {
        let DnsServer { udp, tcp, handler } = self;
        let tcp_handler = handler.clone();
        let tcp_task = tokio::spawn(serve_tcp(tcp, tcp_handler));
        // Two receive loops on the socket keep both cores busy under load.
        let mut loops = Vec::new();
        for _ in 0..2 {
            loops.push(tokio::spawn(serve_udp(udp.clone(), handler.clone())));
        }
        for l in loops {
            let _ = l.await;
        }
        tcp_task.abort();
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, handler: Handler) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // e.g. ICMP errors surfaced on the socket: keep serving.
                tracing::debug!(error = %e, "dns: udp recv");
                continue;
            }
        };
        let packet = &buf[..n];
        match handler.answer(packet, false) {
            Outcome::Reply(r) => {
                let _ = sock.send_to(&r, peer).await;
            }
            Outcome::Drop => {}
            Outcome::Forward => {
                let packet = packet.to_vec();
                let (h, s) = (handler.clone(), sock.clone());
                tokio::spawn(async move {
                    if let Some(r) = h.forward(&packet, false).await {
                        let _ = s.send_to(&r, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            loop {
                let len = match tokio::time::timeout(Duration::from_secs(10), conn.read_u16()).await
                {
                    Ok(Ok(l)) => usize::from(l),
                    _ => return,
                };
                let mut buf = vec![0u8; len];
                if conn.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let Some(resp) = h.handle(&buf, true).await else {
                    // Malformed: drop the connection.
                    return;
                };
                let Ok(l) = u16::try_from(resp.len()) else {
                    return;
                };
                if conn.write_all(&l.to_be_bytes()).await.is_err()
                    || conn.write_all(&resp).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

fn record_for(
    key: (&str, &str),
    svcs: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> Option<ServiceRecord> {
    let svc = svcs.get(&ObjectRef::new(key.1).within(key.0))?;
    let mine: Vec<Arc<EndpointSlice>> = slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(key.0)
                && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(key.1)
        })
        .collect();
    let refs: Vec<&EndpointSlice> = mine.iter().map(|a| a.as_ref()).collect();
    Some(ServiceRecord::from_objects(&svc, &refs))
}

fn rebuild(zone: &RwLock<Zone>, svcs: &Store<Service>, slices: &Store<EndpointSlice>) {
    let mut by_svc: HashMap<(String, String), Vec<Arc<EndpointSlice>>> = HashMap::new();
    for s in slices.state() {
        if let Some(n) = s.labels().get(SERVICE_NAME_LABEL) {
            by_svc
                .entry((s.namespace().unwrap_or_default(), n.clone()))
                .or_default()
                .push(s);
        }
    }
    let all: Vec<(String, String, ServiceRecord)> = svcs
        .state()
        .iter()
        .map(|svc| {
            let id = (svc.namespace().unwrap_or_default(), svc.name_any());
            let sl = by_svc.get(&id).cloned().unwrap_or_default();
            let refs: Vec<&EndpointSlice> = sl.iter().map(|a| a.as_ref()).collect();
            let rec = ServiceRecord::from_objects(svc, &refs);
            (id.0, id.1, rec)
        })
        .collect();
    zone.write().replace_all(all);
}

/// Keep `zone` current from the API until the process ends.
pub async fn run_watchers(client: Client, zone: Arc<RwLock<Zone>>) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    // `Some(key)`: that service changed; `None`: a (re)list finished.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<(String, String)>>();
    let svc_events = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    crate::proxy::forward_events(svc_events, tx.clone(), |s: &Service| {
        Some((s.namespace().unwrap_or_default(), s.name_any()))
    });
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    );
    crate::proxy::forward_events(slice_events, tx, |s: &EndpointSlice| {
        s.labels()
            .get(SERVICE_NAME_LABEL)
            .map(|n| (s.namespace().unwrap_or_default(), n.clone()))
    });
    if svc_store.wait_until_ready().await.is_err() || slice_store.wait_until_ready().await.is_err()
    {
        return;
    }
    rebuild(&zone, &svc_store, &slice_store);
    while let Some(changed) = rx.recv().await {
        let Some((ns, name)) = changed else {
            rebuild(&zone, &svc_store, &slice_store);
            continue;
        };
        match record_for((&ns, &name), &svc_store, &slice_store) {
            Some(rec) => zone.write().upsert(&ns, &name, rec),
            None => zone.write().remove(&ns, &name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{build_query, decode_response, TYPE_A, TYPE_SRV};
    use crate::dns::zone::PortRecord;

    fn handler(upstreams: Vec<SocketAddr>) -> Handler {
        let mut z = Zone::new("cluster.local");
        z.upsert(
            "default",
            "web",
            ServiceRecord {
                cluster_ips: vec!["10.43.0.5".parse().unwrap()],
                ports: vec![PortRecord {
                    name: "http".into(),
                    protocol: "tcp".into(),
                    port: 80,
                }],
                ..Default::default()
            },
        );
        Handler::new(Arc::new(RwLock::new(z)), upstreams)
    }

    async fn udp_ask(server: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(q, server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(300), s.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn serves_udp_tcp_forwards_and_drops_garbage() {
        // A fake upstream answering every query with NXDOMAIN... from its own zone.
        let mut up_zone = Zone::new("example.org");
        up_zone.upsert("x", "y", ServiceRecord::default());
        let upstream = DnsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Handler::new(Arc::new(RwLock::new(up_zone)), vec![]),
        )
        .await
        .unwrap();
        let (up_udp, _) = upstream.local_addrs().unwrap();
        tokio::spawn(upstream.serve());

        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), handler(vec![up_udp]))
            .await
            .unwrap();
        let (udp, tcp) = server.local_addrs().unwrap();
        tokio::spawn(server.serve());

        let r = udp_ask(
            udp,
            &build_query(1, "web.default.svc.cluster.local", TYPE_A),
        )
        .await
        .unwrap();
        let d = decode_response(&r).unwrap();
        assert_eq!(d.answers[0].data, "10.43.0.5");
        let r = udp_ask(
            udp,
            &build_query(2, "_http._tcp.web.default.svc.cluster.local", TYPE_SRV),
        )
        .await
        .unwrap();
        assert_eq!(
            decode_response(&r).unwrap().answers[0].data,
            "0 100 80 web.default.svc.cluster.local"
        );
        let r = udp_ask(
            udp,
            &build_query(3, "nope.default.svc.cluster.local", TYPE_A),
        )
        .await
        .unwrap();
        assert_eq!(decode_response(&r).unwrap().rcode, wire::RCODE_NXDOMAIN);
        // Forwarded: the upstream is authoritative for example.org and says NOERROR/empty
        // for its apex, NXDOMAIN below it.
        let r = udp_ask(udp, &build_query(4, "foo.example.org", TYPE_A))
            .await
            .unwrap();
        let d = decode_response(&r).unwrap();
        assert_eq!((d.id, d.rcode, d.aa), (4, wire::RCODE_NXDOMAIN, true));
        // Garbage is dropped, and the server keeps serving.
        assert!(udp_ask(udp, &[1, 2, 3, 4, 5]).await.is_none());
        assert!(udp_ask(
            udp,
            &build_query(5, "web.default.svc.cluster.local", TYPE_A)
        )
        .await
        .is_some());

        // TCP
        let mut c = TcpStream::connect(tcp).await.unwrap();
        let q = build_query(6, "web.default.svc.cluster.local", TYPE_A);
        c.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        c.write_all(&q).await.unwrap();
        let n = c.read_u16().await.unwrap();
        let mut buf = vec![0u8; n as usize];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(decode_response(&buf).unwrap().answers[0].data, "10.43.0.5");
    }

    #[tokio::test]
    async fn no_upstream_is_servfail() {
        let h = handler(vec![]);
        let r = h
            .handle(&build_query(9, "example.com", TYPE_A), false)
            .await
            .unwrap();
        assert_eq!(decode_response(&r).unwrap().rcode, RCODE_SERVFAIL);
    }

    #[test]
    fn resolv_conf_upstreams() {
        let u = upstreams_from_resolv_conf("# x\nnameserver 1.1.1.1\nsearch a\nnameserver ::1\n");
        assert_eq!(
            u,
            vec!["1.1.1.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
