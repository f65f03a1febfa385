//! Opens many idle TLS connections (and, optionally, idle WebSocket tunnels) to a
//! running snirouter and reports its memory per connection, then checks that a fresh
//! client is still served.
//!
//! ```sh
//! cargo run --release -p snirouter --example idle_flood -- \
//!     ADDR NAME CA_PEM COUNT ROUTER_PID [TUNNELS TUNNEL_NAME]
//! # the upstream for TUNNEL_NAME: answers every request with 101 and then echoes bytes
//! cargo run --release -p snirouter --example idle_flood -- upgrade-backend 127.0.0.1:18090
//! ```
//! Used by `just idle-flood` (docs/reliability.md) and by `just bench`'s scaling run
//! (docs/benchmarks.md). Loopback only. The last line of output is a `summary` line
//! of `key=value` pairs for scripts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Handshakes in flight at once.
const CONCURRENT_OPENS: usize = 256;
/// Connections per source address: one address is capped by
/// `limits.max_connections_per_client` (default 1024).
const PER_SOURCE: usize = 1000;

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

/// The `i`-th connection's source address: 127.0.0.2, 127.0.0.3, … in blocks of
/// [`PER_SOURCE`].
fn source(i: usize) -> IpAddr {
    let block = i / PER_SOURCE;
    Ipv4Addr::new(127, 0, (block / 250) as u8, (2 + block % 250) as u8).into()
}

/// Where to connect and what to check.
struct Target {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl Target {
    /// A TLS connection to `name` from `from`.
    async fn open(&self, from: IpAddr, name: &str) -> Result<TlsStream<TcpStream>, Error> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = socket.connect(self.addr).await?;
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())?;
        Ok(self.connector.connect(server_name, tcp).await?)
    }

    /// A WebSocket upgrade to `name`: the connection once the router answered `101`.
    async fn tunnel(&self, from: IpAddr, name: &str) -> Result<TlsStream<TcpStream>, Error> {
        let mut tls = self.open(from, name).await?;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {name}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await?;
        let head = read_head(&mut tls).await?;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("upgrade refused: {}", head.lines().next().unwrap_or("")).into());
        }
        Ok(tls)
    }
}

/// Reads a response or request head (up to the blank line), at most 16 KiB.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, Error> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte).await? == 0 {
            return Err("connection closed before the end of the head".into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Opens `count` connections with `open(i)`, [`CONCURRENT_OPENS`] at a time; returns
/// those that succeeded and the first error.
async fn open_many<F, Fut>(count: usize, open: F) -> (Vec<TlsStream<TcpStream>>, Option<String>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<TlsStream<TcpStream>, Error>> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_OPENS));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (sem, fut) = (Arc::clone(&sem), open(i));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            fut.await
        }));
    }
    let (mut held, mut first_error) = (Vec::with_capacity(count), None);
    for t in tasks {
        match t.await.map_err(Error::from).and_then(|r| r) {
            Ok(tls) => held.push(tls),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (held, first_error)
}

/// One request on a fresh connection while everything is held: its status line and time.
async fn fresh_request(target: &Target, name: &str) -> Result<(String, Duration), Error> {
    let started = Instant::now();
    let mut tls = target.open(Ipv4Addr::LOCALHOST.into(), name).await?;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await??;
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned();
    Ok((status, started.elapsed()))
}

/// Bytes through the first tunnel come back (the backend echoes): it is a real tunnel.
async fn tunnel_echoes(tunnel: &mut TlsStream<TcpStream>) -> bool {
    let probe = b"snirouter-tunnel-probe";
    let mut back = [0u8; 22];
    tunnel.write_all(probe).await.is_ok()
        && tokio::time::timeout(Duration::from_secs(5), tunnel.read_exact(&mut back)).await.is_ok_and(|r| r.is_ok())
        && &back == probe
}

fn per_kib(before: u64, after: u64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { after.saturating_sub(before) as f64 / n as f64 }
}

/// The upstream of the tunnel service: a request asking for a WebSocket gets `101
/// Switching Protocols`, then whatever arrives is echoed until the peer closes; any
/// other request gets a small `200` and the connection closes.
async fn upgrade_backend(listen: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("upgrade backend on {}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(head) = read_head(&mut stream).await else { return };
            if !head.to_ascii_lowercase().contains("\r\nupgrade: websocket\r\n") {
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
                let _ = stream.write_all(answer.as_bytes()).await;
                return;
            }
            let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
            if stream.write_all(answer.as_bytes()).await.is_ok() {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
    }
}

/// The flood's arguments.
struct Flood {
    target: Arc<Target>,
    name: Arc<str>,
    count: usize,
    pid: u32,
    tunnels: Option<(usize, Arc<str>)>,
}

fn parse(args: &[String]) -> Result<Flood, Error> {
    let tunnels = match args.get(6) {
        Some(n) => Some((n.parse()?, Arc::from(args.get(7).ok_or("TUNNELS needs TUNNEL_NAME")?.as_str()))),
        None => None,
    };
    let roots = snirouter_tls::roots_from_pem(&std::fs::read_to_string(&args[3])?)?;
    let cfg = snirouter_tls::client_config(snirouter_tls::Trust::Roots(roots), &[b"http/1.1"])?;
    let target = Target { addr: args[1].parse()?, connector: TlsConnector::from(Arc::new(cfg)) };
    Ok(Flood {
        target: Arc::new(target),
        name: Arc::from(args[2].as_str()),
        count: args[4].parse()?,
        pid: args[5].parse()?,
        tunnels,
    })
}

async fn flood(f: Flood) -> Result<(), Error> {
    let before = rss_kib(f.pid);
    let started = Instant::now();
    let (target, name) = (Arc::clone(&f.target), Arc::clone(&f.name));
    let (held, error) = open_many(f.count, move |i| {
        let (target, name) = (Arc::clone(&target), Arc::clone(&name));
        async move { target.open(source(i), &name).await }
    })
    .await;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(f.pid);
    println!("| idle TLS connections held | {} of {} |", held.len(), f.count);
    println!("| time to open them | {:.1} s |", opened.as_secs_f64());
    println!("| router RSS before / after | {before} KiB / {after} KiB |");
    println!("| router memory per idle connection | {:.1} KiB |", per_kib(before, after, held.len()));
    if let Some(e) = &error {
        println!("| first failure | {e} |");
    }
    let mut summary = format!("held={} conn_kib={:.1}", held.len(), per_kib(before, after, held.len()));
    let mut tunnels = Vec::new();
    if let Some((n, tunnel_name)) = &f.tunnels {
        let (target, offset) = (Arc::clone(&f.target), f.count);
        let tunnel_name = Arc::clone(tunnel_name);
        let (opened, error) = open_many(*n, move |i| {
            let (target, name) = (Arc::clone(&target), Arc::clone(&tunnel_name));
            async move { target.tunnel(source(offset + i), &name).await }
        })
        .await;
        tunnels = opened;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let with_tunnels = rss_kib(f.pid);
        let echoes = match tunnels.first_mut() {
            Some(t) => tunnel_echoes(t).await,
            None => false,
        };
        let kib = per_kib(after, with_tunnels, tunnels.len());
        println!("| idle WebSocket tunnels held (bytes echo through: {echoes}) | {} of {n} |", tunnels.len());
        println!("| router RSS with the tunnels | {with_tunnels} KiB |");
        println!("| router memory per idle tunnel (client TLS + upstream TCP) | {kib:.1} KiB |");
        if let Some(e) = &error {
            println!("| first tunnel failure | {e} |");
        }
        summary += &format!(" tunnels={} tunnel_kib={kib:.1} echo={echoes} rss_kib={with_tunnels}", tunnels.len());
    } else {
        summary += &format!(" rss_kib={after}");
    }
    let (status, took) = fresh_request(&f.target, &f.name).await?;
    println!("| fresh request while held | {status} in {:.1} ms |", took.as_secs_f64() * 1000.0);
    println!("summary {summary} fresh_ms={:.1}", took.as_secs_f64() * 1000.0);
    drop((held, tunnels));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    raise_nofile();
    if args.len() == 3 && args[1] == "upgrade-backend" {
        return upgrade_backend(args[2].parse()?).await;
    }
    if args.len() != 6 && args.len() != 8 {
        eprintln!("usage: idle_flood ADDR NAME CA_PEM COUNT ROUTER_PID [TUNNELS TUNNEL_NAME]");
        eprintln!("       idle_flood upgrade-backend LISTEN_ADDR");
        std::process::exit(2);
    }
    flood(parse(&args)?).await
}
