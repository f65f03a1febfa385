//! Opens many idle TLS connections to a running snirouter and reports its memory per
//! connection, then checks that a fresh client is still served.
//!
//! ```sh
//! cargo run --release -p snirouter --example idle_flood -- \
//!     ADDR NAME CA_PEM COUNT ROUTER_PID
//! ```
//! Used by `just idle-flood` (results in docs/reliability.md). Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: idle_flood ADDR NAME CA_PEM COUNT ROUTER_PID");
        std::process::exit(2);
    }
    raise_nofile();
    let addr: SocketAddr = args[1].parse()?;
    let name = args[2].clone();
    let count: usize = args[4].parse()?;
    let pid: u32 = args[5].parse()?;
    let roots = snirouter_tls::roots_from_pem(&std::fs::read_to_string(&args[3])?)?;
    let cfg = snirouter_tls::client_config(snirouter_tls::Trust::Roots(roots), &[b"http/1.1"])?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));

    let before = rss_kib(pid);
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (connector, name, sem) = (connector.clone(), name.clone(), sem.clone());
        // Many clients, not one: spread the sources over 127.0.0.2.. (1000 each), as a
        // single address is capped by limits.max_connections_per_client.
        let source: std::net::IpAddr =
            std::net::Ipv4Addr::new(127, 0, (i / 1000 / 250) as u8, (2 + i / 1000 % 250) as u8).into();
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.ok()?;
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::new(source, 0)).ok()?;
            let tcp = socket.connect(addr).await.ok()?;
            let server_name = rustls::pki_types::ServerName::try_from(name).ok()?;
            let tls = connector.connect(server_name, tcp).await.ok()?;
            drop(permit);
            Some(tls)
        }));
    }
    let mut held = Vec::with_capacity(count);
    for t in tasks {
        if let Ok(Some(tls)) = t.await {
            held.push(tls);
        }
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);

    // A fresh client while all of them are held.
    let fresh_started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(rustls::pki_types::ServerName::try_from(name.clone())?, tcp).await?;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await??;
    let fresh = fresh_started.elapsed();
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned();

    let per_conn = if held.is_empty() { 0.0 } else { (after.saturating_sub(before)) as f64 / held.len() as f64 };
    println!("| idle TLS connections held | {} of {count} |", held.len());
    println!("| time to open them | {:.1} s |", opened.as_secs_f64());
    println!("| router RSS before / after | {} KiB / {} KiB |", before, after);
    println!("| router memory per idle connection | {per_conn:.1} KiB |");
    println!("| fresh request while held | {status} in {:.1} ms |", fresh.as_secs_f64() * 1000.0);
    drop(held);
    Ok(())
}
