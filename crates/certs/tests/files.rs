//! Certificates from PEM files: served for every name under the domain (wildcards
//! included), swapped in when the files change, the last good pair kept when new
//! files are unusable.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use snirouter_certs::{CertSource, CertStore, FileCerts, FileSource, Lookup, ServedName};
use snirouter_testkit::TestCa;

const DAY: Duration = Duration::from_secs(86_400);

fn write_pair(dir: &std::path::Path, ca: &TestCa, domain: &str) -> String {
    let now = SystemTime::now();
    let pair = ca.issue(domain, now - DAY, now + 90 * DAY);
    std::fs::write(dir.join("fullchain.pem"), &pair.chain_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &pair.key_pem).expect("key");
    pair.serial
}

fn setup(names: &[&str]) -> (tempfile::TempDir, Arc<CertStore>, Arc<FileCerts>, FileSource) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(CertStore::new());
    let served: Vec<ServedName> =
        names.iter().map(|n| ServedName::from_files(n, n.split('.').next().unwrap_or(n))).collect();
    store.set_names(&served);
    let source = FileSource {
        domain: "example.com".into(),
        cert: dir.path().join("fullchain.pem"),
        key: dir.path().join("key.pem"),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
    };
    let files = FileCerts::new(Arc::clone(&store));
    (dir, store, files, source)
}

fn serial(store: &CertStore, name: &str) -> Option<String> {
    store.current(name).map(|c| c.serial.clone())
}

#[test]
fn a_wildcard_serves_every_name_and_renewals_swap_in() {
    let ca = TestCa::new();
    let (dir, store, files, source) = setup(&["grafana.example.com", "example.com", "a.b.example.com"]);
    let first = write_pair(dir.path(), &ca, "*.example.com");
    let failures = files.set_sources(vec![source]);
    assert_eq!(serial(&store, "grafana.example.com").as_deref(), Some(first.as_str()));
    assert_eq!(serial(&store, "example.com").as_deref(), Some(first.as_str()), "the wildcard pair names the apex too");
    assert_eq!(store.current("grafana.example.com").map(|c| c.source), Some(CertSource::File));
    // A wildcard covers one label only.
    assert!(matches!(store.lookup("a.b.example.com"), Lookup::NotReady { .. }));
    let [(domain, e)] = &failures[..] else { panic!("{failures:?}") };
    assert_eq!((domain.as_str(), e.kind()), ("example.com", "file_wrong_name"));
    assert!(e.fix().contains("a.b.example.com"), "{}", e.fix());

    // Names no service has, under the domain: the wildcard serves them (a 404 page
    // follows over TLS); deeper names and other domains stay unknown.
    assert!(matches!(store.lookup("nothing.example.com"), Lookup::Ready(_)));
    assert!(matches!(store.lookup("x.y.example.com"), Lookup::Unknown));
    assert!(matches!(store.lookup("grafana.other.org"), Lookup::Unknown));

    // Unchanged files are not read again; a renewal is.
    assert!(files.refresh(false).is_empty());
    let second = write_pair(dir.path(), &ca, "*.example.com");
    files.refresh(false);
    assert_eq!(serial(&store, "grafana.example.com").as_deref(), Some(second.as_str()));
    let state = &store.snapshot().into_iter().find(|s| s.fqdn == "grafana.example.com").expect("snap").state;
    assert!(state.last_error.is_none() && state.last_success.is_some(), "{state:?}");
}

#[test]
fn unusable_files_keep_the_last_good_pair() {
    let ca = TestCa::new();
    let (dir, store, files, source) = setup(&["grafana.example.com"]);
    let good = write_pair(dir.path(), &ca, "grafana.example.com");
    assert!(files.set_sources(vec![source.clone()]).is_empty());

    // Half-way through a renewal: the new certificate, the old key.
    let now = SystemTime::now();
    let next = ca.issue("grafana.example.com", now - DAY, now + 90 * DAY);
    std::fs::write(&source.cert, &next.chain_pem).expect("cert");
    let failures = files.refresh(false);
    assert_eq!(failures.first().map(|(_, e)| e.kind()), Some("file_key_mismatch"), "{failures:?}");
    assert_eq!(serial(&store, "grafana.example.com").as_deref(), Some(good.as_str()), "last good kept");
    // The key arrives: served at the next look.
    std::fs::write(&source.key, &next.key_pem).expect("key");
    assert!(files.refresh(false).is_empty());
    assert_eq!(serial(&store, "grafana.example.com"), Some(next.serial.clone()));

    // Garbage, a missing key, an expired pair: each named, each keeping what serves.
    std::fs::write(&source.cert, "not pem").expect("cert");
    assert_eq!(files.refresh(false).first().map(|(_, e)| e.kind()), Some("file_invalid"));
    std::fs::write(&source.cert, &next.chain_pem).expect("cert");
    std::fs::remove_file(&source.key).expect("rm key");
    let failures = files.refresh(true);
    let (_, e) = failures.first().expect("failure");
    assert_eq!(e.kind(), "file_unreadable");
    assert!(e.to_string().contains("key.pem") && e.fix().contains("readable"), "{e}");
    let old = ca.issue("grafana.example.com", now - 100 * DAY, now - DAY);
    std::fs::write(&source.cert, &old.chain_pem).expect("cert");
    std::fs::write(&source.key, &old.key_pem).expect("key");
    assert_eq!(files.refresh(false).first().map(|(_, e)| e.kind()), Some("file_expired"));
    assert_eq!(serial(&store, "grafana.example.com"), Some(next.serial), "still the last good one");
    let snap = store.snapshot();
    let state = &snap[0].state;
    assert_eq!(state.last_error_kind.as_deref(), Some("file_expired"));
    assert!(state.total_failures >= 4 && state.fix.is_some(), "{state:?}");
}
