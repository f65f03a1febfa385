//! The access log: one line per request, as JSON (Caddy's field names where one exists)
//! or in the combined log format (what fail2ban and log analysers read), to standard
//! error or to `[log] access_file`.
//!
//! Lines are formatted on the request's thread and handed to a writer thread of their
//! own through a bounded queue: a slow or full disk never holds a request up — when the
//! queue is full the line is dropped and counted. The file is reopened on
//! [`AccessLog::reopen`] (SIGUSR1, reload) so logrotate can move it away.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use snirouter_config::AccessFormat;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 8192;
/// How soon an idle writer notices a reopen.
const REOPEN_POLL: Duration = Duration::from_millis(250);

/// What one access line says.
#[derive(Debug)]
pub struct Entry<'a> {
    /// When the request head arrived.
    pub at: SystemTime,
    /// The service.
    pub service: &'a str,
    /// The real client address (after `trusted_proxies`).
    pub client: IpAddr,
    /// The connection's peer (TCP peer or PROXY source).
    pub peer: std::net::SocketAddr,
    /// The authenticated user: tailnet login, forward auth's `Remote-User`.
    pub user: Option<&'a str>,
    /// The request's Host.
    pub host: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub uri: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub proto: &'a str,
    /// The answer's status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// From the request head to the end of the answer.
    pub duration: Duration,
    /// The upstream the request went to.
    pub upstream: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// The whole answer was sent (the client did not go away first).
    pub complete: bool,
}

/// What the access log needs to know of a request that the answer does not say: the
/// real client, the user, the upstream. The HTTP stage puts it in the response's
/// extensions.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The real client address (after `trusted_proxies`).
    pub client: IpAddr,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The upstream the request went to.
    pub upstream: Option<String>,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Stderr,
    File(PathBuf),
}

/// Counters of the access log, for `/metrics`.
#[derive(Debug, Default)]
pub struct AccessLogCounters {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped because the writer was behind (a slow or full disk).
    pub dropped: AtomicU64,
    /// Lines the file refused (write errors).
    pub failed: AtomicU64,
}

/// The access log of one router; cheap to share.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<String>,
    format: AtomicU8,
    /// A reopen asked for, with the target to open.
    pending: Arc<Mutex<Option<Target>>>,
    reopen: Arc<AtomicBool>,
    counters: Arc<AccessLogCounters>,
}

/// The access log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the access log {path}: {source}\n  fix: create its directory and let snirouter's user write there, or change [log] access_file"
)]
pub struct OpenError {
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: io::Error,
}

fn open(target: &Target) -> Result<Box<dyn Write + Send>, OpenError> {
    match target {
        Target::Stderr => Ok(Box::new(io::stderr())),
        Target::File(path) => {
            let mut opts = OpenOptions::new();
            opts.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
            let file: File =
                opts.open(path).map_err(|source| OpenError { path: path.display().to_string(), source })?;
            Ok(Box::new(file))
        }
    }
}

fn target(file: Option<PathBuf>) -> Target {
    file.map_or(Target::Stderr, Target::File)
}

fn format_code(f: AccessFormat) -> u8 {
    match f {
        AccessFormat::Json => 0,
        AccessFormat::Combined => 1,
    }
}

impl AccessLog {
    /// Opens `file` (standard error for `None`) and starts the writer thread.
    pub fn new(format: AccessFormat, file: Option<PathBuf>) -> Result<Arc<AccessLog>, OpenError> {
        let target = target(file);
        let out = open(&target)?;
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let log = AccessLog {
            tx,
            format: AtomicU8::new(format_code(format)),
            pending: Arc::new(Mutex::new(None)),
            reopen: Arc::new(AtomicBool::new(false)),
            counters: Arc::default(),
        };
        let writer = Writer {
            rx,
            out: BufWriter::new(out),
            target,
            pending: Arc::clone(&log.pending),
            reopen: Arc::clone(&log.reopen),
            counters: Arc::clone(&log.counters),
        };
        std::thread::Builder::new()
            .name("snirouter-access-log".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| OpenError { path: "(writer thread)".to_owned(), source })?;
        Ok(Arc::new(log))
    }

    /// Applies `[log]` after a reload: the format at once, the file at the next line.
    pub fn configure(&self, format: AccessFormat, file: Option<PathBuf>) {
        self.format.store(format_code(format), Ordering::Relaxed);
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(target(file));
        self.reopen.store(true, Ordering::Release);
    }

    /// Reopens the file (SIGUSR1: logrotate moved it away).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// The counters.
    pub fn counters(&self) -> &AccessLogCounters {
        &self.counters
    }

    /// Queues one line; drops it (counted) when the writer is behind.
    pub fn record(&self, entry: &Entry<'_>) {
        let line = match self.format.load(Ordering::Relaxed) {
            0 => json_line(entry),
            _ => combined_line(entry),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    rx: Receiver<String>,
    out: BufWriter<Box<dyn Write + Send>>,
    target: Target,
    pending: Arc<Mutex<Option<Target>>>,
    reopen: Arc<AtomicBool>,
    counters: Arc<AccessLogCounters>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let received = self.rx.recv_timeout(REOPEN_POLL);
            // Before the lines: a line queued after `reopen()` goes to the new file.
            if self.reopen.swap(false, Ordering::Acquire) {
                self.reopen_now();
            }
            match received {
                Ok(line) => {
                    self.write(&line);
                    while let Ok(more) = self.rx.try_recv() {
                        self.write(&more);
                    }
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.out.flush();
                    return;
                }
            }
        }
    }

    fn write(&mut self, line: &str) {
        match self.out.write_all(line.as_bytes()) {
            Ok(()) => self.counters.written.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Opens the pending target (or the current one again); keeps the old one when the
    /// new one cannot be opened.
    fn reopen_now(&mut self) {
        let _ = self.out.flush();
        let wanted = self.pending.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or(self.target.clone());
        match open(&wanted) {
            Ok(out) => {
                self.out = BufWriter::new(out);
                self.target = wanted;
            }
            Err(e) => {
                tracing::error!(cause = %crate::local::error_chain(&e), "access log not reopened; still writing to the previous file")
            }
        }
    }
}

/// One JSON access line, in Caddy's field order (`level`, `ts`, `logger`, `msg`,
/// `request`, `user_id`, `duration`, `size`, `status`) with snirouter's own after.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    level: &'static str,
    ts: f64,
    logger: &'static str,
    msg: &'static str,
    request: JsonRequest<'a>,
    user_id: &'a str,
    duration: f64,
    size: u64,
    status: u16,
    service: &'a str,
    upstream: &'a str,
    complete: bool,
}

/// Caddy's `request` object.
#[derive(serde::Serialize)]
struct JsonRequest<'a> {
    remote_ip: String,
    remote_port: String,
    client_ip: String,
    proto: &'a str,
    method: &'a str,
    host: &'a str,
    uri: &'a str,
    headers: JsonHeaders<'a>,
}

/// The request headers the access log keeps, as Caddy writes headers: name → values.
#[derive(serde::Serialize)]
struct JsonHeaders<'a> {
    #[serde(rename = "User-Agent", skip_serializing_if = "Option::is_none")]
    user_agent: Option<[&'a str; 1]>,
    #[serde(rename = "Referer", skip_serializing_if = "Option::is_none")]
    referer: Option<[&'a str; 1]>,
}

/// One JSON object: Caddy's `http.log.access` fields where one exists.
fn json_line(e: &Entry<'_>) -> String {
    let line = JsonLine {
        level: "info",
        ts: e.at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        logger: "http.log.access",
        msg: "handled request",
        request: JsonRequest {
            remote_ip: e.peer.ip().to_string(),
            remote_port: e.peer.port().to_string(),
            client_ip: e.client.to_string(),
            proto: e.proto,
            method: e.method,
            host: e.host,
            uri: e.uri,
            headers: JsonHeaders { user_agent: e.user_agent.map(|v| [v]), referer: e.referer.map(|v| [v]) },
        },
        user_id: e.user.unwrap_or(""),
        duration: e.duration.as_secs_f64(),
        size: e.bytes,
        status: e.status,
        service: e.service,
        upstream: e.upstream.unwrap_or(""),
        complete: e.complete,
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

/// `CLIENT - USER [07/Dec/2026:00:18:46 +0000] "GET /x HTTP/1.1" 200 123 "REFERER" "AGENT"`.
fn combined_line(e: &Entry<'_>) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    let at = time::OffsetDateTime::from(e.at);
    let when = at.format(FORMAT).unwrap_or_default();
    let user = e.user.filter(|u| !u.is_empty()).map_or_else(|| "-".to_owned(), |u| escaped(u).replace(' ', "_"));
    format!(
        "{} - {user} [{when}] \"{} {} {}\" {} {} \"{}\" \"{}\"\n",
        e.client,
        escaped(e.method),
        escaped(e.uri),
        e.proto,
        e.status,
        e.bytes,
        escaped(e.referer.unwrap_or("-")),
        escaped(e.user_agent.unwrap_or("-")),
    )
}

/// `"`, `\` and control characters as `\xHH`, as nginx writes them: one request, one
/// line, whatever the client sent.
fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", u32::from(c) & 0xff)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_602_726),
            service: "grafana",
            client: "203.0.113.7".parse().expect("ip"),
            peer: "127.0.0.1:40000".parse().expect("peer"),
            user: Some("alice"),
            host: "grafana.example.com",
            method: "GET",
            uri: "/a\"b\n",
            proto: "HTTP/1.1",
            status: 401,
            bytes: 12,
            duration: Duration::from_millis(3),
            upstream: None,
            user_agent: Some("curl/8"),
            referer: None,
            complete: true,
        }
    }

    #[test]
    fn combined_is_one_line_with_the_real_client() {
        let line = combined_line(&entry());
        assert_eq!(
            line,
            "203.0.113.7 - alice [07/Dec/2026:00:18:46 +0000] \"GET /a\\x22b\\x0A HTTP/1.1\" 401 12 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn json_has_caddys_fields() {
        let line = json_line(&entry());
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.starts_with("{\"level\":\"info\",\"ts\":1796602726.0,\"logger\":\"http.log.access\""), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["request"]["client_ip"], "203.0.113.7");
        assert_eq!(v["request"]["remote_ip"], "127.0.0.1");
        assert_eq!(v["request"]["headers"]["User-Agent"][0], "curl/8");
        assert_eq!((v["status"].as_u64(), v["size"].as_u64()), (Some(401), Some(12)));
        assert_eq!(v["user_id"], "alice");
        assert_eq!(v["logger"], "http.log.access");
    }

    #[test]
    fn a_file_is_written_and_reopened_after_a_rotation() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let log = AccessLog::new(AccessFormat::Combined, Some(path.clone())).expect("open");
        log.record(&entry());
        let wait = |p: &std::path::Path, lines: usize| {
            for _ in 0..200 {
                if std::fs::read_to_string(p).is_ok_and(|t| t.lines().count() >= lines) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{} never had {lines} lines", p.display());
        };
        wait(&path, 1);
        std::fs::rename(&path, dir.path().join("access.log.1")).expect("rotate");
        log.reopen();
        log.record(&entry());
        wait(&path, 1);
        assert_eq!(log.counters().written.load(Ordering::Relaxed), 2);
        assert_eq!(log.counters().dropped.load(Ordering::Relaxed), 0);
    }
}
