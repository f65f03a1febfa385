//! Deterministic fuzzing of the importer: 5,000 mutations of the owner's Caddyfile
//! (byte flips, cuts, deletions, inserted bytes and Caddyfile punctuation) must give a
//! translation or a typed error with a line, never a panic.

use snirouter_caddyfile::translate;

const OWNER: &str = include_str!("fixtures/owner.Caddyfile");

#[test]
fn importer_never_panics_on_mutated_input() {
    const PUNCT: &[&[u8]] = &[b"{", b"}", b"\"", b"`", b"\\\n", b"#", b"{$", b"\n", b" ", b"import ", b"<<EOF\n"];
    let mut rng = fastrand::Rng::with_seed(0xc0ff_ee12_3456_789b);
    let seed = OWNER.as_bytes();
    for _ in 0..5_000 {
        let mut v = seed.to_vec();
        for _ in 0..(1 + rng.u64(..6)) {
            let at = if v.is_empty() { 0 } else { rng.usize(..v.len()) };
            match rng.u64(..5) {
                0 if !v.is_empty() => v[at] = rng.u8(..),
                1 => v.truncate(at),
                2 if !v.is_empty() => {
                    let len = rng.usize(..200).min(v.len() - at);
                    v.drain(at..at + len);
                }
                3 => {
                    let p = PUNCT[rng.usize(..PUNCT.len())];
                    v.splice(at..at, p.iter().copied());
                }
                _ => v.insert(at.min(v.len()), rng.u8(..)),
            }
        }
        let text = String::from_utf8_lossy(&v);
        let _ = translate(&text, "mutated.Caddyfile");
    }
}
