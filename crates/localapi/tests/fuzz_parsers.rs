//! Deterministic fuzzing of the parsers that read tailscaled's answers: the status
//! JSON and the key+chain PEM body. Mutated inputs must produce `Ok` or a typed
//! error, never a panic.

use snirouter_localapi::{Status, parse_pair_pem};

/// `seed` with one random change: bytes flipped, cut, a range removed, or bytes inserted.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    match rng.u64(..4) {
        0 => {
            for _ in 0..(1 + rng.u64(..8)) {
                if v.is_empty() {
                    break;
                }
                let at = rng.usize(..v.len());
                v[at] = rng.u8(..);
            }
        }
        1 => {
            let cut = rng.usize(..=v.len());
            v.truncate(cut);
        }
        2 => {
            if !v.is_empty() {
                let at = rng.usize(..v.len());
                let len = rng.usize(..64).min(v.len() - at);
                v.drain(at..at + len);
            }
        }
        _ => {
            let at = rng.usize(..=v.len());
            let insert: Vec<u8> = (0..rng.u64(..32)).map(|_| rng.u8(..)).collect();
            v.splice(at..at, insert);
        }
    }
    v
}

const STATUS_SEEDS: [&str; 3] = [
    include_str!("fixtures/status_running.json"),
    include_str!("fixtures/status_signed_out.json"),
    include_str!("fixtures/status_all_null.json"),
];

#[test]
fn status_json_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0x1234_5678_9abc_def1);
    for seed in STATUS_SEEDS {
        assert!(serde_json::from_str::<Status>(seed).is_ok(), "seed parses");
        for _ in 0..3_000 {
            let input = mutate(&mut rng, seed.as_bytes());
            if let Ok(status) = serde_json::from_slice::<Status>(&input) {
                // Accessors on whatever parsed must not panic either.
                let _ = status.magic_dns_suffix();
                if let Some(node) = &status.self_node {
                    let _ = node.service_host();
                }
            }
        }
    }
}

#[test]
fn pair_pem_never_panics() {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["grafana.tailnet.ts.net".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let seed = format!("{}{}{}", key.serialize_pem(), cert.pem(), cert.pem());
    assert!(parse_pair_pem(seed.as_bytes()).is_ok(), "seed parses");
    let mut rng = fastrand::Rng::with_seed(0xfeed_face_dead_beef);
    for _ in 0..5_000 {
        let input = mutate(&mut rng, seed.as_bytes());
        let _ = parse_pair_pem(&input);
    }
}
