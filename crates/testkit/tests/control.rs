//! The simulated control API on its own: token, auth, the addrs rule, /devices and the
//! /vip-services switch.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use snirouter_testkit::control::{SimControl, SimControlConfig};

async fn call(
    sim: &SimControl,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let addr = sim.base_url().trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", addr);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (ct, b) = body.unwrap_or(("application/json", String::new()));
    let req = req.header("content-type", ct).body(Full::new(Bytes::from(b))).expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn token(sim: &SimControl) -> String {
    let c = sim.config();
    let form = format!("client_id={}&client_secret={}&grant_type=client_credentials", c.client_id, c.client_secret);
    let (status, v) =
        call(sim, "POST", "/api/v2/oauth/token", None, Some(("application/x-www-form-urlencoded", form))).await;
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn token_auth_and_addrs_rule() {
    let sim = SimControl::start(SimControlConfig::default()).await.expect("start");
    let bad = "client_id=x&client_secret=y&grant_type=client_credentials".to_owned();
    let (status, v) =
        call(&sim, "POST", "/api/v2/oauth/token", None, Some(("application/x-www-form-urlencoded", bad))).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    let (status, v) = call(&sim, "GET", "/api/v2/tailnet/-/services", None, None).await;
    assert_eq!(status, 401);
    assert!(v["message"].is_string());

    let t = token(&sim).await;
    let path = "/api/v2/tailnet/-/services/svc:grafana";
    let (status, _) = call(&sim, "GET", path, Some(&t), None).await;
    assert_eq!(status, 404);
    let body = json!({"name": "svc:grafana", "ports": ["tcp:443"]}).to_string();
    let (status, created) = call(&sim, "PUT", path, Some(&t), Some(("application/json", body.clone()))).await;
    assert_eq!(status, 200, "{created}");
    let addrs = created["addrs"].as_array().expect("addrs");
    assert!(addrs[0].as_str().is_some_and(|a| a.starts_with("100.100.")));
    assert!(addrs[1].as_str().is_some_and(|a| a.starts_with("fd7a:115c:a1e0:")));

    // Updating without addrs, or with another IPv6, is refused.
    let (status, v) = call(&sim, "PUT", path, Some(&t), Some(("application/json", body))).await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("addrs")), "{v}");
    let moved = json!({"name": "svc:grafana", "ports": ["tcp:443"], "addrs": [addrs[0], "fd7a:115c:a1e0::9"]});
    let (status, _) = call(&sim, "PUT", path, Some(&t), Some(("application/json", moved.to_string()))).await;
    assert_eq!(status, 400);
    let kept = json!({"name": "svc:grafana", "ports": ["tcp:443", "tcp:80"], "addrs": addrs});
    let (status, v) = call(&sim, "PUT", path, Some(&t), Some(("application/json", kept.to_string()))).await;
    assert_eq!((status, &v["ports"]), (200, &json!(["tcp:443", "tcp:80"])));

    let (status, v) = call(&sim, "GET", &format!("{path}/devices"), Some(&t), None).await;
    assert_eq!((status, &v["hosts"]), (200, &json!([])), "nobody advertises it yet");
    sim.update(|c| c.hosts = vec![("nStorage1CNTRL".to_owned(), "approved:manual".to_owned())]);
    let link = sim.link();
    link.report_services("nBackup2CNTRL", &["svc:grafana".to_owned()]);
    link.report_services("nOther3CNTRL", &["svc:other".to_owned()]);
    let (_, v) = call(&sim, "GET", &format!("{path}/devices"), Some(&t), None).await;
    let hosts: Vec<(&Value, &Value)> =
        v["hosts"].as_array().expect("hosts").iter().map(|h| (&h["nodeId"], &h["approvalLevel"])).collect();
    assert_eq!(
        hosts,
        [(&json!("nStorage1CNTRL"), &json!("approved:manual")), (&json!("nBackup2CNTRL"), &json!("approved:auto"))],
        "the configured hosts, then the nodes advertising it"
    );
    link.report_services("nBackup2CNTRL", &[]);
    let (_, v) = call(&sim, "GET", &format!("{path}/devices"), Some(&t), None).await;
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(1), "no longer advertised: no longer a host");

    let (status, v) = call(&sim, "GET", "/api/v2/tailnet/-/services", Some(&t), None).await;
    assert_eq!((status, v["vipServices"].as_array().map(Vec::len)), (200, Some(1)));
    sim.set_services_path_missing(true);
    let (status, _) = call(&sim, "GET", "/api/v2/tailnet/-/services", Some(&t), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&sim, "GET", "/api/v2/tailnet/-/vip-services/svc:grafana", Some(&t), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&sim, "GET", "/api/v2/tailnet/other.example/vip-services", Some(&t), None).await;
    assert_eq!(status, 404, "unknown tailnet");
    sim.shutdown().await;
}
