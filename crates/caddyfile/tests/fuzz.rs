//! Deterministic fuzzing of the importer: 5,000 mutations of the owner's Caddyfile
//! (byte flips, cuts, deletions, inserted bytes and Caddyfile punctuation) must give a
//! translation or a typed error with a line, never a panic.

use snirouter_caddyfile::translate;

const OWNER: &str = include_str!("fixtures/owner.Caddyfile");

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn importer_never_panics_on_mutated_input() {
    const PUNCT: &[&[u8]] = &[b"{", b"}", b"\"", b"`", b"\\\n", b"#", b"{$", b"\n", b" ", b"import ", b"<<EOF\n"];
    let mut rng = XorShift(0xc0ff_ee12_3456_789b);
    let seed = OWNER.as_bytes();
    for _ in 0..5_000 {
        let mut v = seed.to_vec();
        for _ in 0..(1 + rng.next() % 6) {
            let at = if v.is_empty() { 0 } else { (rng.next() as usize) % v.len() };
            match rng.next() % 5 {
                0 if !v.is_empty() => v[at] = rng.next() as u8,
                1 => v.truncate(at),
                2 if !v.is_empty() => {
                    let len = ((rng.next() as usize) % 200).min(v.len() - at);
                    v.drain(at..at + len);
                }
                3 => {
                    let p = PUNCT[(rng.next() as usize) % PUNCT.len()];
                    v.splice(at..at, p.iter().copied());
                }
                _ => v.insert(at.min(v.len()), rng.next() as u8),
            }
        }
        let text = String::from_utf8_lossy(&v);
        let _ = translate(&text, "mutated.Caddyfile");
    }
}
