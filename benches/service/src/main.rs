//! A small JSON service and its load in one process, the shape of the
//! services zonealloc is a drop-in allocator for: a tokio runtime with two
//! workers, hyper HTTP/1.1 on loopback, request bodies parsed and responses
//! built with serde_json, and one request in eight handing work to the
//! blocking pool, whose threads start under load and retire in the idle gaps
//! between waves (`thread_keep_alive` is shorter than a gap). Prints one line:
//! throughput over the busy time, latency percentiles, and peak RSS.
//!
//! ```sh
//! cd benches/service
//! cargo run --release --features zonealloc -- [WAVES] [CONNECTIONS] [REQUESTS_PER_CONNECTION]
//! ```
//!
//! `.ci/service-bench` runs it under each allocator in turn. At the end of
//! the last wave (the busiest moment, before the idle gap lets purges run),
//! `SERVICE_STATS=1` prints zonealloc's `global_stats()` and
//! `SERVICE_SMAPS=1` the mappings holding 256 KiB or more of RSS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

#[cfg(feature = "zonealloc")]
#[global_allocator]
static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = if cfg!(feature = "zonealloc") {
    "zonealloc"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

/// The idle gap between waves: longer than the blocking pool's keep-alive,
/// so its threads retire and the next wave starts new ones.
const GAP: Duration = Duration::from_millis(120);
const KEEP_ALIVE: Duration = Duration::from_millis(40);

#[derive(Serialize, Deserialize)]
struct Item {
    sku: String,
    name: String,
    quantity: u32,
    price_cents: u64,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    address: String,
    items: Vec<Item>,
    note: String,
}

#[derive(Serialize)]
struct Line {
    sku: String,
    description: String,
    total_cents: u64,
}

#[derive(Serialize)]
struct Receipt {
    id: u64,
    customer: String,
    lines: Vec<Line>,
    total_cents: u64,
    report: Option<String>,
}

/// A request of 1 to 24 items, its size varying with `seed`.
fn order(seed: u64) -> Order {
    let n = 1 + (seed % 24) as usize;
    Order {
        id: seed,
        customer: format!("customer-{}", seed % 9973),
        address: format!("{} Long Street, Flat {}, Somewhere {}", seed % 500, seed % 40, seed % 97),
        items: (0..n)
            .map(|i| Item {
                sku: format!("SKU-{:08}", seed.wrapping_mul(31).wrapping_add(i as u64) % 100_000_000),
                name: "item ".repeat(1 + (i + seed as usize) % 12),
                quantity: 1 + (i as u32 % 5),
                price_cents: 99 + (seed + i as u64) % 10_000,
                tags: (0..(i % 4)).map(|t| format!("tag{t}")).collect(),
            })
            .collect(),
        note: "n".repeat((seed % 300) as usize),
    }
}

/// The blocking pool's share: a report over the order, sorted and joined.
fn report(order: &Order) -> String {
    let mut rows: Vec<String> = order
        .items
        .iter()
        .flat_map(|item| {
            (0..8).map(move |k| format!("{}:{}:{}:{}", item.sku, item.name.trim(), k, item.price_cents * k))
        })
        .collect();
    rows.sort_unstable();
    rows.join("\n")
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(Response::builder().status(400).body(Full::new(Bytes::new())).unwrap()),
    };
    let order: Order = match serde_json::from_slice(&body) {
        Ok(order) => order,
        Err(_) => return Ok(Response::builder().status(422).body(Full::new(Bytes::new())).unwrap()),
    };
    if order.id.is_multiple_of(8) {
        let receipt = tokio::task::spawn_blocking(move || {
            let r = report(&order);
            receipt(order, Some(r))
        })
        .await
        .expect("the blocking task ran");
        return Ok(Response::new(Full::new(receipt)));
    }
    Ok(Response::new(Full::new(receipt(order, None))))
}

fn receipt(order: Order, report: Option<String>) -> Bytes {
    let lines: Vec<Line> = order
        .items
        .into_iter()
        .map(|item| Line {
            description: format!("{} x {} [{}]", item.quantity, item.name.trim(), item.tags.join(",")),
            total_cents: item.price_cents * u64::from(item.quantity),
            sku: item.sku,
        })
        .collect();
    let total_cents = lines.iter().map(|l| l.total_cents).sum();
    let receipt = Receipt { id: order.id, customer: order.customer, lines, total_cents, report };
    Bytes::from(serde_json::to_vec(&receipt).expect("serialisable"))
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        stream.set_nodelay(true).expect("TCP_NODELAY");
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// One client connection: `requests` requests one after another, each
/// checked; returns each one's latency in microseconds.
async fn client(addr: SocketAddr, first: u64, requests: u64) -> Vec<u32> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut latencies = Vec::with_capacity(requests as usize);
    for seed in first..first + requests {
        let body = serde_json::to_vec(&order(seed)).expect("serialisable");
        let request = Request::post("/orders")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let start = Instant::now();
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        latencies.push(start.elapsed().as_micros() as u32);
        let receipt: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(receipt["id"], seed);
        assert_eq!(receipt["report"].is_string(), seed.is_multiple_of(8));
    }
    latencies
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM in kB")
}

/// Every mapping holding 256 KiB or more of RSS, from `/proc/self/smaps`.
fn print_resident_mappings() {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut mapping = "";
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("AnonHugePages:") {
            let kib: u64 = kib.trim().trim_end_matches(" kB").parse().unwrap_or(0);
            if kib > 0 {
                eprintln!("{kib:>8} kB in huge pages");
            }
        } else if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib.trim().trim_end_matches(" kB").parse().unwrap_or(0);
            if kib >= 256 {
                eprintln!("{kib:>8} kB {mapping}");
            }
        } else if !line.starts_with(|c: char| c.is_ascii_uppercase()) {
            mapping = line;
        }
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).map_or(default, |a| a.parse().expect("a number"))
}

fn main() {
    let waves = arg(1, 20);
    let connections = arg(2, 32);
    let per_connection = arg(3, 250);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_keep_alive(KEEP_ALIVE)
        .enable_all()
        .build()
        .expect("runtime");
    let (busy, mut latencies) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(serve(listener));
        let mut busy = Duration::ZERO;
        let mut latencies = Vec::new();
        for wave in 0..waves {
            let start = Instant::now();
            let clients: Vec<_> = (0..connections)
                .map(|c| {
                    let first = (wave * connections + c) * per_connection;
                    tokio::spawn(client(addr, first, per_connection))
                })
                .collect();
            for c in clients {
                latencies.extend(c.await.expect("client"));
            }
            busy += start.elapsed();
            #[cfg(feature = "zonealloc")]
            if std::env::var("SERVICE_STATS").is_ok_and(|w| w.parse() == Ok(wave)) {
                eprintln!("{}", zonealloc::global_stats().expect("the global arena is up"));
            }
            if std::env::var_os("SERVICE_TRACE").is_some() {
                eprintln!(
                    "wave {wave}: {:.3} s, peak RSS so far {} KiB",
                    start.elapsed().as_secs_f64(),
                    peak_rss_kib()
                );
            }
            if std::env::var("SERVICE_SMAPS").is_ok_and(|w| w.parse() == Ok(wave)) {
                print_resident_mappings();
            }
            tokio::time::sleep(GAP).await;
        }
        (busy, latencies)
    });
    drop(runtime);
    latencies.sort_unstable();
    let n = latencies.len();
    assert_eq!(n as u64, waves * connections * per_connection);
    let pct = |p: usize| latencies[(n * p / 100).min(n - 1)];
    println!(
        "{ALLOCATOR} requests {n} busy_seconds {:.3} rps {:.0} p50_us {} p99_us {} peak_rss_kib {}",
        busy.as_secs_f64(),
        n as f64 / busy.as_secs_f64(),
        pct(50),
        pct(99),
        peak_rss_kib()
    );
}
