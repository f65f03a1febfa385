//! Deterministic fuzzing of the parsers that read tailscaled's answers: the status
//! JSON and the key+chain PEM body. Mutated inputs must produce `Ok` or a typed
//! error, never a panic.

use snirouter_localapi::{Status, parse_pair_pem};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        match self.next() % 4 {
            0 => {
                for _ in 0..(1 + self.next() % 8) {
                    if v.is_empty() {
                        break;
                    }
                    let at = (self.next() as usize) % v.len();
                    v[at] = self.next() as u8;
                }
            }
            1 => {
                let cut = (self.next() as usize) % (v.len() + 1);
                v.truncate(cut);
            }
            2 => {
                if !v.is_empty() {
                    let at = (self.next() as usize) % v.len();
                    let len = ((self.next() as usize) % 64).min(v.len() - at);
                    v.drain(at..at + len);
                }
            }
            _ => {
                let at = (self.next() as usize) % (v.len() + 1);
                let insert: Vec<u8> = (0..(self.next() % 32)).map(|_| self.next() as u8).collect();
                v.splice(at..at, insert);
            }
        }
        v
    }
}

const STATUS_SEEDS: [&str; 3] = [
    include_str!("fixtures/status_running.json"),
    include_str!("fixtures/status_signed_out.json"),
    include_str!("fixtures/status_all_null.json"),
];

#[test]
fn status_json_never_panics() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for seed in STATUS_SEEDS {
        assert!(serde_json::from_str::<Status>(seed).is_ok(), "seed parses");
        for _ in 0..3_000 {
            let input = rng.mutate(seed.as_bytes());
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
    let mut rng = XorShift(0xfeed_face_dead_beef);
    for _ in 0..5_000 {
        let input = rng.mutate(seed.as_bytes());
        let _ = parse_pair_pem(&input);
    }
}
