//! Syncthing (Debian `syncthing`) behind the router: its REST API's event long-polls
//! must not hold up other requests.
//!
//! Syncthing's GUI/API refuses any Host but localhost or a loopback address when it
//! listens on loopback (`403 Host check error`). Behind a proxy either set
//! `upstream_host = "localhost"` on the service or Syncthing's GUI option
//! `insecureSkipHostcheck`; this test uses the former (and shows the 403 without it).

use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::harness::{body_and_status, curl, free_port, temp_dir};
use crate::support::{self, App};

const API_KEY: &str = "snirouter-apps-syncthing-key";

/// `syncthing generate`, then a config that stays on loopback: no discovery, relays,
/// NAT traversal, usage reports, crash reports or upgrade checks.
fn configure(home: &std::path::Path, sync_port: u16) {
    let out = Command::new("syncthing")
        .args(["generate", "--no-default-folder", "--skip-port-probing"])
        .arg(format!("--home={}", home.display()))
        .output()
        .expect("run syncthing generate");
    assert!(out.status.success(), "syncthing generate: {}", String::from_utf8_lossy(&out.stderr));
    let path = home.join("config.xml");
    let mut xml = std::fs::read_to_string(&path).expect("config.xml");
    let listen = format!("tcp://127.0.0.1:{sync_port}");
    for (from, to) in [
        ("<listenAddress>default</listenAddress>", format!("<listenAddress>{listen}</listenAddress>")),
        ("<address>dynamic</address>", format!("<address>{listen}</address>")),
        ("<globalAnnounceEnabled>true<", "<globalAnnounceEnabled>false<".into()),
        ("<localAnnounceEnabled>true<", "<localAnnounceEnabled>false<".into()),
        ("<relaysEnabled>true<", "<relaysEnabled>false<".into()),
        ("<natEnabled>true<", "<natEnabled>false<".into()),
        ("<urAccepted>0<", "<urAccepted>-1<".into()),
        ("<autoUpgradeIntervalH>12<", "<autoUpgradeIntervalH>0<".into()),
        ("<crashReportingEnabled>true<", "<crashReportingEnabled>false<".into()),
        ("<stunKeepaliveStartS>180<", "<stunKeepaliveStartS>0<".into()),
        ("<startBrowser>true<", "<startBrowser>false<".into()),
        ("<announceLANAddresses>true<", "<announceLANAddresses>false<".into()),
    ] {
        assert!(xml.contains(from), "syncthing's generated config.xml has no {from}:\n{xml}");
        xml = xml.replace(from, &to);
    }
    std::fs::write(&path, xml).expect("write config.xml");
}

/// 70 event long-polls held open (two HTTP/2 connections of 35) while
/// `GET /rest/system/ping` must answer at once, on those connections and a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncthing_ping_answers_while_70_event_long_polls_wait() {
    const POLLS: usize = 70;
    const BOUND: Duration = Duration::from_secs(5);
    support::require_bin("syncthing", "syncthing");
    let dir = temp_dir("syncthing");
    let home = dir.path().join("home");
    let (gui_port, sync_port) = (free_port(), free_port());
    configure(&home, sync_port);
    let mut cmd = Command::new("syncthing");
    cmd.args(["serve", "--no-browser", "--no-restart"])
        .arg(format!("--home={}", home.display()))
        .arg(format!("--gui-address=http://127.0.0.1:{gui_port}"))
        .arg(format!("--gui-apikey={API_KEY}"))
        .env("STNOUPGRADE", "1")
        .env("HOME", dir.path());
    let mut app = App::spawn("syncthing", cmd, &dir.path().join("syncthing.log"));
    app.wait_http(gui_port, "/rest/noauth/health").await;

    let services = format!(
        "[services.syncthing]\nupstream = \"http://127.0.0.1:{gui_port}\"\nupstream_host = \"localhost\"\n\n\
         [services.syncthing-hostcheck]\nupstream = \"http://127.0.0.1:{gui_port}\"\n"
    );
    let env = support::env_with(&["syncthing", "syncthing-hostcheck"], services, "").await;
    let key = format!("X-API-Key: {API_KEY}");

    // Without upstream_host, Syncthing refuses the tailnet Host.
    let (body, status) = body_and_status(&curl(&env, "syncthing-hostcheck", "/rest/system/ping", &["-H", &key]).await);
    assert_eq!((status, body.trim()), (403, "Host check error"), "syncthing without upstream_host");
    let (body, status) = body_and_status(&curl(&env, "syncthing", "/rest/system/ping", &["-H", &key]).await);
    assert_eq!(status, 200, "ping through the router: {body}\nsyncthing log:\n{}", app.logs());

    // LoginAttempt events never happen here, so each poll waits its full 60 s.
    let base = support::origin(&env, "syncthing");
    let get = |path: &str| {
        hyper::Request::get(format!("{base}{path}"))
            .header("x-api-key", API_KEY)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    // Two connections in a row land on the router's two I/O threads (it hands them out
    // in turn, one thread per core here), so 35 polls weigh on each thread's upstream
    // pool, as many browser tabs or API clients would.
    let connections = [support::h2_connect(&env, "syncthing").await, support::h2_connect(&env, "syncthing").await];
    let mut polls = tokio::task::JoinSet::new();
    for i in 0..POLLS {
        let mut h2 = connections[i % 2].clone();
        let req = get(&format!("/rest/events?events=LoginAttempt&since=0&timeout=60&n={i}"));
        // Syncthing sends the response head at once and the body when an event comes
        // or the timeout passes: a poll is over when its body is.
        polls.spawn(async move {
            let started = Instant::now();
            let answer = match h2.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body().collect().await.map(|b| (status, b.to_bytes())).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            (i, started.elapsed(), answer)
        });
    }
    // In flight = accepted by Syncthing (one upstream connection per waiting request).
    let all_in_flight =
        support::poll_until(Duration::from_secs(10), || support::established_to(gui_port) >= POLLS).await;
    let in_flight = support::established_to(gui_port);
    eprintln!("{in_flight} connections to syncthing's GUI port (all {POLLS} polls in flight: {all_in_flight})");

    // The three pings at once, each bounded.
    let h2_ping = |i: usize| {
        let mut h2 = connections[i].clone();
        let req = get("/rest/system/ping");
        async move {
            let started = Instant::now();
            let answer = tokio::time::timeout(BOUND, async {
                let resp = h2.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
            })
            .await;
            (format!("HTTP/2 connection {i} (35 polls on it)"), started.elapsed(), answer.ok())
        }
    };
    let curl_ping = async {
        let started = Instant::now();
        let out = curl(&env, "syncthing", "/rest/system/ping", &["-H", &key, "--max-time", "5"]).await;
        let (body, status) = body_and_status(&out);
        ("a new connection (curl)".to_owned(), started.elapsed(), (status != 0).then_some(Ok((status, body))))
    };
    let (a, b, c) = tokio::join!(h2_ping(0), h2_ping(1), curl_ping);
    let pings = [a, b, c];

    let mut failures = Vec::new();
    for (via, took, answer) in &pings {
        eprintln!("ping over {via}: {answer:?} in {took:?}");
        let pong = match answer {
            Some(Ok((200, body))) => serde_json::from_str::<serde_json::Value>(body).ok(),
            _ => None,
        };
        if pong.as_ref().map(|v| v["ping"] == "pong") != Some(true) || *took > BOUND {
            failures.push(format!("ping over {via}: {answer:?} after {took:?} (bound {BOUND:?})"));
        }
    }
    let mut returned = Vec::new();
    while let Some(done) = polls.try_join_next() {
        returned.push(format!("{:?}", done.expect("poll task")));
    }
    assert!(
        failures.is_empty(),
        "with {POLLS} event long-polls sent, {in_flight} upstream connections to syncthing were open \
         (all {POLLS} in flight within 10 s: {all_in_flight}):\n{}\nrouter log (service=syncthing):\n{}",
        failures.join("\n"),
        support::router_lines(&env, "syncthing")
    );
    assert!(returned.is_empty(), "long-polls returned early: {returned:?}");
    assert!(all_in_flight, "only {in_flight} of {POLLS} long-polls reached syncthing within 10 s");
    polls.abort_all();
    drop(connections);
    app.assert_running();
}
