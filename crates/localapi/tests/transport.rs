//! Transport tests against a tiny hand-rolled HTTP/1.1 responder on a real unix socket:
//! request shape (request line, `Host: local-tailscaled.sock`, no Origin/Referer), socket
//! errors, timeouts, error classification over the wire, and chunked watch-ipn-bus streaming.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snirouter_localapi::{Error, ErrorKind, LocalClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const TEST_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
struct Recorded {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

enum Canned {
    Full { status: u16, headers: Vec<(&'static str, String)>, body: Vec<u8> },
    Chunked { parts: Vec<Vec<u8>>, delay: Duration },
    Hang,
}

fn text(status: u16, body: &str) -> Canned {
    Canned::Full {
        status,
        headers: vec![("Content-Type", "text/plain; charset=utf-8".to_owned())],
        body: body.as_bytes().to_vec(),
    }
}

fn json(body: &str) -> Canned {
    Canned::Full {
        status: 200,
        headers: vec![("Content-Type", "application/json".to_owned())],
        body: body.as_bytes().to_vec(),
    }
}

type Handler = dyn Fn(&Recorded) -> Canned + Send + Sync;

struct Mock {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    fn start(handler: impl Fn(&Recorded) -> Canned + Send + Sync + 'static) -> Mock {
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("tailscaled.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let handler = handler.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(stream, handler, reqs).await;
                });
            }
        });
        Mock { _dir: dir, sock, requests, task }
    }

    fn client(&self) -> LocalClient {
        LocalClient::new(&self.sock).unwrap()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<Option<Recorded>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(Some(Recorded { request_line, headers, body }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn serve_conn(
    mut stream: UnixStream,
    handler: Arc<Handler>,
    reqs: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream).await? else { return Ok(()) };
    reqs.lock().unwrap().push(req.clone());
    match handler(&req) {
        Canned::Full { status, headers, body } => {
            let mut out = format!(
                "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Length: {}\r\n",
                reason(status),
                body.len()
            );
            out.push_str("Tailscale-Version: 1.102.4-fake\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await?;
        }
        Canned::Chunked { parts, delay } => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            stream.flush().await?;
            for p in parts {
                tokio::time::sleep(delay).await;
                stream.write_all(format!("{:x}\r\n", p.len()).as_bytes()).await?;
                stream.write_all(&p).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
            stream.flush().await?;
        }
        Canned::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// Every request must look like the Go client's: exact Host, no Origin/Referer, HTTP/1.1.
fn assert_clean(r: &Recorded) {
    assert!(r.request_line.ends_with(" HTTP/1.1"), "{}", r.request_line);
    assert_eq!(r.header("Host"), Some("local-tailscaled.sock"), "headers: {:?}", r.headers);
    assert_eq!(r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("host")).count(), 1);
    assert!(r.header("Origin").is_none(), "Origin sent: {:?}", r.headers);
    assert!(r.header("Referer").is_none(), "Referer sent: {:?}", r.headers);
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_DEADLINE, f).await.expect("test exceeded its deadline");
}

const RUNNING: &str = include_str!("fixtures/status_running.json");

fn generated_pair_pem() -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["storage.bat-boa.ts.net".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    format!("{}{}{}", key.serialize_pem(), leaf.pem(), ca.pem())
}

#[tokio::test]
async fn status_request_shape_and_parse() {
    bounded(async {
        let mock = Mock::start(|_| json(RUNNING));
        let lc = mock.client();
        assert_eq!(lc.socket_path(), mock.sock.as_path());
        let st = lc.status().await.unwrap();
        assert_eq!(st.cert_domains, vec!["storage.bat-boa.ts.net"]);
        assert_eq!(st.self_node.unwrap().dns_name, "storage.bat-boa.ts.net");
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].request_line, "GET /localapi/v0/status?peers=false HTTP/1.1");
        assert_clean(&reqs[0]);
    })
    .await;
}

#[tokio::test]
async fn status_garbage_is_bad_response() {
    bounded(async {
        let mock = Mock::start(|_| json("<html>not json</html>"));
        let err = mock.client().status().await.unwrap_err();
        assert!(matches!(&err, Error::BadResponse { what, .. } if what.contains("status")), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn cert_pair_success_with_min_validity() {
    bounded(async {
        let pem = generated_pair_pem();
        let body = pem.clone();
        let mock = Mock::start(move |_| Canned::Full {
            status: 200,
            headers: vec![("Content-Type", "text/plain".to_owned())],
            body: body.as_bytes().to_vec(),
        });
        let lc = mock.client();
        let pair = lc
            .cert_pair("Storage.bat-boa.ts.net.", Some(Duration::from_secs(720 * 3600)), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(pair.chain.len(), 2);
        assert_eq!(pair.pem, pem);
        let pair2 = lc.cert_pair("storage.bat-boa.ts.net", None, Duration::from_secs(5)).await.unwrap();
        assert_eq!(pair2.chain, pair.chain);
        let reqs = mock.requests();
        assert_eq!(
            reqs[0].request_line,
            "GET /localapi/v0/cert/storage.bat-boa.ts.net?type=pair&min_validity=720h0m0s HTTP/1.1"
        );
        assert_eq!(reqs[1].request_line, "GET /localapi/v0/cert/storage.bat-boa.ts.net?type=pair HTTP/1.1");
        reqs.iter().for_each(assert_clean);
    })
    .await;
}

#[tokio::test]
async fn cert_errors_over_the_wire() {
    bounded(async {
        let mock = Mock::start(|r| {
            let path = r.request_line.split(' ').nth(1).unwrap_or_default().to_owned();
            let domain = path.trim_start_matches("/localapi/v0/cert/").split('?').next().unwrap_or_default().to_owned();
            match domain.split('.').next().unwrap_or_default() {
                "grafana" => text(500, &format!("invalid domain \"{domain}\"; must be one of [\"storage.bat-boa.ts.net\"]\n")),
                "denied" => text(403, "cert access denied\n"),
                "limited" => Canned::Full {
                    status: 429,
                    headers: vec![("Retry-After", "120".to_owned())],
                    body: b"429 urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued\n".to_vec(),
                },
                "nohttps" => text(500, "your Tailscale account does not support getting TLS certs\n"),
                "nonetmap" => text(500, "no netmap available\n"),
                "notfound" => text(404, "404 page not found\n"),
                "setdns" => text(500, "SetDNS \"_acme-challenge.setdns.bat-boa.ts.net\" => \"x\": set-dns response: 500 Internal Server Error, failed to create DNS record\n"),
                "badtype" => text(400, "invalid type; want \"cert\" (default), \"key\", or \"pair\"\n"),
                "jsonerr" => Canned::Full {
                    status: 500,
                    headers: vec![("Content-Type", "application/json".to_owned())],
                    body: br#"{"error":"no netmap available"}"#.to_vec(),
                },
                "notpem" => text(200, "hello\n"),
                _ => text(500, "something else entirely\n"),
            }
        });
        let lc = mock.client();
        let t = Duration::from_secs(5);
        let get = |n: &str| {
            let lc = lc.clone();
            let n = format!("{n}.bat-boa.ts.net");
            async move { lc.cert_pair(&n, None, t).await.unwrap_err() }
        };

        match get("grafana").await {
            Error::NotInCertDomains { domain, allowed } => {
                assert_eq!(domain, "grafana.bat-boa.ts.net");
                assert_eq!(allowed, vec!["storage.bat-boa.ts.net"]);
            }
            other => panic!("{other:?}"),
        }
        let e = get("denied").await;
        assert_eq!(e.kind(), ErrorKind::CertAccessDenied);
        assert!(e.fix().unwrap().contains("TS_PERMIT_CERT_UID"));
        let e = get("limited").await;
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
        assert!(matches!(get("nohttps").await, Error::HttpsDisabled));
        assert!(matches!(get("nonetmap").await, Error::NoNetmap));
        assert!(matches!(get("jsonerr").await, Error::NoNetmap));
        assert!(matches!(get("notfound").await, Error::NotSupported { endpoint } if endpoint == "cert/notfound.bat-boa.ts.net"));
        assert!(matches!(get("setdns").await, Error::SetDnsFailed { .. }));
        assert!(matches!(get("badtype").await, Error::Daemon { status: 400, .. }));
        assert!(matches!(get("other").await, Error::Daemon { status: 500, body } if body == "something else entirely"));
        assert!(matches!(get("notpem").await, Error::BadResponse { .. }));

        // Locally rejected names never reach the daemon.
        let before = mock.requests().len();
        let e = lc.cert_pair("../../status", None, t).await.unwrap_err();
        assert!(matches!(e, Error::InvalidDomain { .. }), "{e:?}");
        assert_eq!(mock.requests().len(), before);
        mock.requests().iter().for_each(assert_clean);
    })
    .await;
}

#[tokio::test]
async fn cert_domains_endpoint_and_fallback() {
    bounded(async {
        let mock = Mock::start(|r| match r.request_line.as_str() {
            l if l.starts_with("GET /localapi/v0/cert-domains ") => json("[\"a.x.ts.net\",\"b.x.ts.net\"]\n"),
            _ => text(500, "unexpected"),
        });
        assert_eq!(mock.client().cert_domains().await.unwrap(), vec!["a.x.ts.net", "b.x.ts.net"]);

        let mock = Mock::start(|_| json("null\n"));
        assert!(mock.client().cert_domains().await.unwrap().is_empty());

        // Old daemon: 404 on cert-domains => status().cert_domains.
        let mock = Mock::start(|r| {
            if r.request_line.starts_with("GET /localapi/v0/cert-domains ") {
                text(404, "404 page not found\n")
            } else {
                json(RUNNING)
            }
        });
        assert_eq!(mock.client().cert_domains().await.unwrap(), vec!["storage.bat-boa.ts.net"]);
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].request_line, "GET /localapi/v0/status?peers=false HTTP/1.1");
        reqs.iter().for_each(assert_clean);

        // Other errors are not swallowed by the fallback.
        let mock = Mock::start(|_| text(403, "cert-domains access denied\n"));
        let e = mock.client().cert_domains().await.unwrap_err();
        assert!(matches!(e, Error::AccessDenied { ref endpoint, .. } if endpoint == "cert-domains"), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn whois_found_and_not_found() {
    bounded(async {
        let mock = Mock::start(|r| {
            if r.request_line.contains("addr=100.64.0.9%3A5555") {
                json(r#"{"Node":{"Name":"laptop.bat-boa.ts.net."},"UserProfile":{"LoginName":"alice@example.com","DisplayName":"Alice","ProfilePicURL":""}}"#)
            } else {
                text(404, "no match for IP:port\n")
            }
        });
        let lc = mock.client();
        let w = lc.whois("100.64.0.9:5555".parse().unwrap(), None).await.unwrap().unwrap();
        assert_eq!(w.login_name, "alice@example.com");
        assert_eq!(w.node_name, "laptop.bat-boa.ts.net");
        let v6: SocketAddr = "[fd7a:115c:a1e0::1]:443".parse().unwrap();
        assert!(lc.whois(v6, None).await.unwrap().is_none());
        let _ = lc.whois("100.64.0.9:1".parse().unwrap(), Some("svc:grafana")).await;
        let reqs = mock.requests();
        assert_eq!(reqs[2].request_line, "GET /localapi/v0/whois?addr=100.64.0.9%3A1&svc_name=svc%3Agrafana HTTP/1.1");
        assert_eq!(reqs[0].request_line, "GET /localapi/v0/whois?addr=100.64.0.9%3A5555 HTTP/1.1");
        assert_eq!(reqs[1].request_line, "GET /localapi/v0/whois?addr=%5Bfd7a%3A115c%3Aa1e0%3A%3A1%5D%3A443 HTTP/1.1");
        reqs.iter().for_each(assert_clean);

        // A 404 without "no match" is an old daemon, not "unknown peer".
        let mock = Mock::start(|_| text(404, "404 page not found\n"));
        let e = mock.client().whois("100.64.0.9:1".parse().unwrap(), None).await.unwrap_err();
        assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn serve_config_etag_round_trip() {
    bounded(async {
        let mock = Mock::start(|r| {
            if r.request_line.starts_with("GET ") {
                Canned::Full {
                    status: 200,
                    headers: vec![("Content-Type", "application/json".to_owned()), ("Etag", "\"abc123\"".to_owned())],
                    body: br#"{"TCP":{"443":{"HTTPS":true}}}"#.to_vec(),
                }
            } else if r.header("If-Match") == Some("\"abc123\"") {
                text(200, "")
            } else {
                text(412, "etag mismatch\n")
            }
        });
        let lc = mock.client();
        let (mut cfg, etag) = lc.serve_config().await.unwrap();
        assert_eq!(etag.as_deref(), Some("\"abc123\""));
        cfg["Services"] =
            serde_json::json!({"svc:grafana": {"TCP": {"443": {"TCPForward": "127.0.0.1:8443", "ProxyProtocol": 2}}}});
        lc.set_serve_config(&cfg, etag.as_deref()).await.unwrap();
        let e = lc.set_serve_config(&cfg, Some("\"stale\"")).await.unwrap_err();
        assert!(matches!(e, Error::PreconditionFailed), "{e:?}");
        assert!(e.fix().is_some());

        let reqs = mock.requests();
        assert_eq!(reqs[0].request_line, "GET /localapi/v0/serve-config HTTP/1.1");
        assert_eq!(reqs[1].request_line, "POST /localapi/v0/serve-config HTTP/1.1");
        assert_eq!(reqs[1].header("Content-Type"), Some("application/json"));
        let posted: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
        assert_eq!(posted, cfg);
        reqs.iter().for_each(assert_clean);

        // `null` config comes back as an empty object; locked config is typed.
        let mock = Mock::start(|r| {
            if r.request_line.starts_with("GET ") {
                json("null\n")
            } else {
                text(500, "can't reconfigure tailscaled when using a config file; config file is locked\n")
            }
        });
        let lc = mock.client();
        let (cfg, etag) = lc.serve_config().await.unwrap();
        assert_eq!(cfg, serde_json::json!({}));
        assert_eq!(etag, None);
        assert!(matches!(lc.set_serve_config(&cfg, None).await.unwrap_err(), Error::ConfigLocked));
        assert!(mock.requests()[1].header("If-Match").is_none());
    })
    .await;
}

#[tokio::test]
async fn prefs_get_and_patch() {
    bounded(async {
        let mock = Mock::start(|r| {
            if r.request_line.starts_with("PATCH ") {
                json(&format!("{{\"WantRunning\":true,\"AdvertiseServices\":{}}}", {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                    v["AdvertiseServices"].to_string()
                }))
            } else {
                json(r#"{"WantRunning":true,"AdvertiseServices":null}"#)
            }
        });
        let lc = mock.client();
        let p = lc.prefs().await.unwrap();
        assert_eq!(p["WantRunning"], true);
        let masked = serde_json::json!({"AdvertiseServicesSet": true, "AdvertiseServices": ["svc:grafana"]});
        let p = lc.edit_prefs(&masked).await.unwrap();
        assert_eq!(p["AdvertiseServices"], serde_json::json!(["svc:grafana"]));
        let reqs = mock.requests();
        assert_eq!(reqs[0].request_line, "GET /localapi/v0/prefs HTTP/1.1");
        assert_eq!(reqs[1].request_line, "PATCH /localapi/v0/prefs HTTP/1.1");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&reqs[1].body).unwrap(), masked);
        reqs.iter().for_each(assert_clean);

        let mock = Mock::start(|_| text(403, "prefs access denied\n"));
        let e = mock.client().edit_prefs(&masked).await.unwrap_err();
        assert!(matches!(e, Error::AccessDenied { ref endpoint, .. } if endpoint == "prefs"), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn watch_ipn_bus_reassembles_split_lines() {
    bounded(async {
        let mock = Mock::start(|_| Canned::Chunked {
            parts: vec![
                br#"{"Version":"1.1"#.to_vec(),
                b"02.4\"}\n{\"State\":6}\n\n{\"Hea".to_vec(),
                b"lth\":{}}\r\n".to_vec(),
                br#"{"Last":true}"#.to_vec(), // no trailing newline before EOF
            ],
            delay: Duration::from_millis(20),
        });
        let lc = mock.client();
        let mut w = lc.watch_ipn_bus(2 | 128).await.unwrap();
        assert_eq!(w.next().await.unwrap(), Some(serde_json::json!({"Version": "1.102.4"})));
        assert_eq!(w.next().await.unwrap(), Some(serde_json::json!({"State": 6})));
        assert_eq!(w.next().await.unwrap(), Some(serde_json::json!({"Health": {}})));
        assert_eq!(w.next().await.unwrap(), Some(serde_json::json!({"Last": true})));
        assert_eq!(w.next().await.unwrap(), None);
        assert_eq!(w.next().await.unwrap(), None);
        let reqs = mock.requests();
        assert_eq!(reqs[0].request_line, "GET /localapi/v0/watch-ipn-bus?mask=130 HTTP/1.1");
        assert_clean(&reqs[0]);

        let mock = Mock::start(|_| text(403, "watch ipn bus access denied\n"));
        let e = mock.client().watch_ipn_bus(2).await.unwrap_err();
        assert!(matches!(e, Error::AccessDenied { ref endpoint, .. } if endpoint == "watch-ipn-bus"), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn watch_ipn_bus_bad_line() {
    bounded(async {
        let mock =
            Mock::start(|_| Canned::Chunked { parts: vec![b"{\"ok\":1}\nnot json\n".to_vec()], delay: Duration::ZERO });
        let mut w = mock.client().watch_ipn_bus(0).await.unwrap();
        assert!(w.next().await.unwrap().is_some());
        assert!(matches!(w.next().await, Err(Error::BadResponse { .. })));
    })
    .await;
}

#[tokio::test]
async fn socket_missing() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope.sock");
        let lc = LocalClient::new(&path).unwrap();
        let e = lc.status().await.unwrap_err();
        assert!(matches!(&e, Error::SocketMissing { path: p } if *p == path), "{e:?}");
        assert!(e.fix().unwrap().contains("systemctl start tailscaled"));
        assert!(e.to_string().contains("nope.sock"));
        // Same for cert calls and the watch stream.
        assert_eq!(
            lc.cert_pair("a.b.ts.net", None, Duration::from_secs(2)).await.unwrap_err().kind(),
            ErrorKind::SocketMissing
        );
        assert_eq!(lc.watch_ipn_bus(0).await.unwrap_err().kind(), ErrorKind::SocketMissing);
    })
    .await;
}

#[tokio::test]
async fn socket_refused_stale_file() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file behind
        assert!(path.exists());
        let e = LocalClient::new(&path).unwrap().status().await.unwrap_err();
        assert!(matches!(&e, Error::SocketRefused { path: p, not_a_socket: None } if *p == path), "{e:?}");
        assert!(e.fix().unwrap().contains("restart tailscaled"));
        assert!(e.kind().is_transient());
    })
    .await;
}

#[tokio::test]
async fn socket_path_not_a_socket() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("regular-file");
        std::fs::write(&path, b"x").unwrap();
        let e = LocalClient::new(&path).unwrap().status().await.unwrap_err();
        // Linux answers ECONNREFUSED for a regular file.
        assert!(matches!(e.kind(), ErrorKind::SocketRefused | ErrorKind::Io), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn cert_timeout_is_typed_and_bounded() {
    bounded(async {
        let mock = Mock::start(|_| Canned::Hang);
        let lc = mock.client();
        let started = Instant::now();
        let e = lc.cert_pair("slow.bat-boa.ts.net", None, Duration::from_millis(300)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        match &e {
            Error::Timeout { what, after } => {
                assert_eq!(*after, Duration::from_millis(300));
                assert!(what.contains("/localapi/v0/cert/slow.bat-boa.ts.net"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.fix().is_some());

        let lc = mock.client().with_default_timeout(Duration::from_millis(200));
        let e = lc.status().await.unwrap_err();
        assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_millis(200)), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_calls_share_one_client() {
    bounded(async {
        let mock = Mock::start(|_| json(RUNNING));
        let lc = mock.client();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let lc = lc.clone();
            set.spawn(async move { lc.status().await.map(|s| s.backend_state) });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), snirouter_localapi::BackendState::Running);
        }
        assert_eq!(mock.requests().len(), 8);
    })
    .await;
}
