//! Issue 13: header rules and error pages for chosen upstream statuses, as the owner's
//! gateway has them on every site (`request_header -x-middleware-subrequest` for
//! CVE-2025-29927, `handle_response` turning upstream 500/503 into pages, 404 passing).

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_and_error_pages_for_chosen_upstream_statuses() {
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let pages = env.dir.path().join("pages");
    std::fs::create_dir_all(&pages).expect("pages");
    for status in ["404", "502", "503"] {
        std::fs::write(pages.join(format!("{status}.html")), format!("<h1>page {status}</h1>")).expect("page");
    }
    let text = std::fs::read_to_string(&env.config).expect("config");
    let defaults = format!(
        "[defaults]\nerror_pages = \"{}\"\nerror_pages_upstream = [500, 503]\nrequest_headers = {{ remove = [\"X-Middleware-Subrequest\"], set = {{ \"X-Gateway\" = \"snirouter\" }} }}\nresponse_headers = {{ set = {{ \"X-Frame-Options\" = \"DENY\" }}, remove = [\"Content-Type\"] }}\n",
        pages.display()
    );
    std::fs::write(&env.config, format!("{text}\n{defaults}")).expect("write");
    add_to_service(&env.config, "jellyfin", "response_headers = { set = { \"X-Frame-Options\" = \"SAMEORIGIN\" } }");
    env.start_router().await;
    env.wait_serving("grafana", Duration::from_secs(60)).await;

    // The request rule: the CVE-2025-29927 header never reaches the upstream.
    let out = curl(
        &env,
        "grafana",
        "/who",
        &["-D", "-", "-H", "X-Middleware-Subrequest: middleware", "-H", "x-gateway: forged"],
    )
    .await;
    let (text, code) = body_and_status(&out);
    assert_eq!(code, 200, "{text}");
    let body = &text[text.find("\r\n\r\n").map_or(0, |i| i + 4)..];
    let seen = json(body);
    assert!(seen["headers"]["x-middleware-subrequest"].is_null(), "{seen}");
    assert_eq!(seen["headers"]["x-gateway"], "snirouter", "set replaces what the client sent: {seen}");
    // The response rules: [defaults]' on every service, a service's own over them.
    let head = text.to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny") && !head.contains("content-type:"), "{text}");
    let out = curl(&env, "jellyfin", "/who", &["-D", "-"]).await;
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("x-frame-options: sameorigin") && !head.contains("x-frame-options: deny"), "{head}");

    // Error pages for the chosen upstream statuses only; snirouter's own answers always.
    let (body, code) = body_and_status(&curl(&env, "grafana", "/status/503", &[]).await);
    assert_eq!((code, body.as_str()), (503, "<h1>page 503</h1>"));
    let (body, code) = body_and_status(&curl(&env, "grafana", "/status/404", &[]).await);
    assert_eq!(code, 404);
    assert_eq!(json(&body)["service"], "grafana", "the app's own 404 passes: {body}");
    let (body, code) = body_and_status(&curl(&env, "grafana", "/status/502", &[]).await);
    assert_eq!(code, 502);
    assert!(!body.contains("page 502"), "an upstream 502 is not in error_pages_upstream: {body}");
    env.backends.remove(0).shutdown().await;
    let (body, code) = body_and_status(&curl(&env, "grafana", "/who", &[]).await);
    assert_eq!((code, body.as_str()), (502, "<h1>page 502</h1>"), "snirouter's own 502 (upstream down) gets its page");
}
