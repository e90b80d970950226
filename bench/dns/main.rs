//! DNS load generator for the cluster DNS server (issue 5: ≥ 20,000 queries/s
//! on loopback with p99 ≤ 2 ms).
//!
//! Starts the server in-process on 127.0.0.1 with a zone of 1,000 services
//! (or targets `--addr HOST:PORT`), then runs `--threads` client threads, each
//! with a UDP socket keeping `--window` queries in flight, for `--secs`
//! seconds, and prints throughput and latency percentiles.
//!
//! `cargo run --release -p navarch-network --example dns-bench -- --secs 5`

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use navarch_network::dns::wire::{build_query, TYPE_A};
use navarch_network::dns::zone::PortRecord;
use navarch_network::dns::{DnsServer, Handler, ServiceRecord, Zone};

struct Args {
    addr: Option<SocketAddr>,
    secs: u64,
    threads: usize,
    window: usize,
}

fn args() -> Args {
    let mut a = Args {
        addr: None,
        secs: 5,
        threads: 2,
        window: 4,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--addr" => a.addr = v[i + 1].parse().ok(),
            "--secs" => a.secs = v[i + 1].parse().unwrap_or(a.secs),
            "--threads" => a.threads = v[i + 1].parse().unwrap_or(a.threads),
            "--window" => a.window = v[i + 1].parse().unwrap_or(a.window),
            _ => {}
        }
        i += 2;
    }
    a
}

fn client(addr: SocketAddr, secs: u64, window: usize, seed: usize) -> (u64, u64, Vec<u32>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut inflight: HashMap<u16, Instant> = HashMap::new();
    let mut lat_us = Vec::with_capacity(1 << 20);
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut id: u16 = (seed as u16).wrapping_mul(7919);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 1500];
    let mut n = seed;
    let mut send = |inflight: &mut HashMap<u16, Instant>, sent: &mut u64| {
        id = id.wrapping_add(1);
        n = n.wrapping_add(1);
        let name = format!("svc-{}.default.svc.cluster.local", n % 1000);
        let q = build_query(id, &name, TYPE_A);
        if sock.send(&q).is_ok() {
            inflight.insert(id, Instant::now());
            *sent += 1;
        }
    };
    for _ in 0..window {
        send(&mut inflight, &mut sent);
    }
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(len) if len >= 2 => {
                let rid = u16::from_be_bytes([buf[0], buf[1]]);
                if let Some(t) = inflight.remove(&rid) {
                    lat_us.push(t.elapsed().as_micros() as u32);
                    send(&mut inflight, &mut sent);
                }
            }
            _ => {
                // Timed out: count what is in flight as lost and refill.
                lost += inflight.len() as u64;
                inflight.clear();
                for _ in 0..window {
                    send(&mut inflight, &mut sent);
                }
            }
        }
    }
    (sent, lost, lat_us)
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = match a.addr {
        Some(addr) => addr,
        None => {
            let mut zone = Zone::new("cluster.local");
            for i in 0..1000 {
                zone.upsert(
                    "default",
                    &format!("svc-{i}"),
                    ServiceRecord {
                        cluster_ips: vec![std::net::Ipv4Addr::new(
                            10,
                            43,
                            (i / 250) as u8,
                            (i % 250) as u8,
                        )],
                        ports: vec![PortRecord {
                            name: "http".into(),
                            protocol: "tcp".into(),
                            port: 80,
                        }],
                        ..Default::default()
                    },
                );
            }
            let handler = Handler::new(Arc::new(parking_lot::RwLock::new(zone)), vec![]);
            let server = rt
                .block_on(DnsServer::bind(
                    "127.0.0.1:0".parse().expect("addr"),
                    handler,
                ))
                .expect("bind dns");
            let (udp, _) = server.local_addrs().expect("addr");
            rt.spawn(server.serve());
            udp
        }
    };
    let started = Instant::now();
    let handles: Vec<_> = (0..a.threads)
        .map(|t| {
            let (secs, window) = (a.secs, a.window);
            std::thread::spawn(move || client(addr, secs, window, t * 100_000))
        })
        .collect();
    let (mut sent, mut lost, mut lat) = (0u64, 0u64, Vec::new());
    for h in handles {
        let (s, l, v) = h.join().expect("client thread");
        sent += s;
        lost += l;
        lat.extend(v);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    println!(
        "dns-bench: {} answers in {:.1}s = {:.0} queries/s; sent {sent}, lost {lost}; latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        lat.len(),
        elapsed,
        lat.len() as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
}
