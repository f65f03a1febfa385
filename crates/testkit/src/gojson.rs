//! Go `encoding/json` (v1) decoding as tailscaled's LocalAPI handlers meet it:
//! `json.NewDecoder(r.Body).Decode(&typed)`.
//!
//! Two halves, like Go's decoder:
//!
//! * [`decode_first`] scans the first JSON value of a body with the rules and
//!   error texts of Go's `scanner.go` (`invalid character 'x' looking for
//!   beginning of value`, `unexpected EOF`, `EOF` for an empty body). Bytes after
//!   the first value are never read, as with `Decoder.Decode`. Object members
//!   keep their order and duplicates, because Go decodes them in order.
//! * [`Dec`] helps decode that value into typed structs the way Go's
//!   `reflect`-based decoder does: struct fields matched exactly or else
//!   case-insensitively, unknown keys dropped, `null` leaving scalars alone, and
//!   the *first* `UnmarshalTypeError` kept while decoding goes on. The texts are
//!   Go's: `json: cannot unmarshal number into Go struct field
//!   TCPPortHandler.TCP.TCPForward of type string` — the innermost struct, then
//!   the struct-field path from the root without map keys.
//!
//! Derived from Go 1.2x `encoding/json` source; not captured from a running
//! daemon. Takes untrusted input and never panics; nesting is limited to Go's
//! 10 000 levels, so callers that decode deep input run on a large stack.

use crate::gofmt;

/// A JSON value as Go's scanner read it: numbers keep their literal text.
#[derive(Clone, Debug, PartialEq)]
pub enum J {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number literal, exactly as written.
    Num(String),
    /// A string, unescaped.
    Str(String),
    /// An array.
    Arr(Vec<J>),
    /// An object: members in input order, duplicates kept.
    Obj(Vec<(String, J)>),
}

impl J {
    /// The kind word Go's `UnmarshalTypeError` uses for this value.
    pub fn kind(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "bool",
            J::Num(_) => "number",
            J::Str(_) => "string",
            J::Arr(_) => "array",
            J::Obj(_) => "object",
        }
    }
}

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

/// Reads the first JSON value of `input` like `json.Decoder.Decode`, with Go's
/// syntax error texts.
pub fn decode_first(input: &[u8]) -> Result<J, String> {
    let mut p = Scanner { b: input, i: 0, depth: 0 };
    p.skip_space();
    if p.i >= p.b.len() {
        return Err("EOF".to_owned());
    }
    p.value()
}

/// Go's `quoteChar`: the byte as a Go character literal.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        _ => {
            let q = gofmt::quote(&char::from(c).to_string());
            format!("'{}'", &q[1..q.len() - 1])
        }
    }
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

const UNEXPECTED_EOF: &str = "unexpected EOF";

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let c = self.peek().ok_or_else(|| UNEXPECTED_EOF.to_owned())?;
        self.i += 1;
        Ok(c)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// `stateBeginValue`, spaces first.
    fn value(&mut self) -> Result<J, String> {
        self.skip_space();
        let c = self.next()?;
        match c {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(J::Str),
            b'-' | b'0'..=b'9' => self.number(c),
            b't' => self.literal(b"rue", "true").map(|()| J::Bool(true)),
            b'f' => self.literal(b"alse", "false").map(|()| J::Bool(false)),
            b'n' => self.literal(b"ull", "null").map(|()| J::Null),
            _ => Err(invalid(c, "looking for beginning of value")),
        }
    }

    fn push(&mut self, c: u8) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(invalid(c, "exceeded max depth")) } else { Ok(()) }
    }

    fn object(&mut self) -> Result<J, String> {
        self.push(b'{')?;
        let mut members = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(J::Obj(members));
        }
        loop {
            self.skip_space();
            let c = self.next()?;
            if c != b'"' {
                return Err(invalid(c, "looking for beginning of object key string"));
            }
            let key = self.string()?;
            self.skip_space();
            let c = self.next()?;
            if c != b':' {
                return Err(invalid(c, "after object key"));
            }
            members.push((key, self.value()?));
            self.skip_space();
            match self.next()? {
                b',' => {}
                b'}' => break,
                c => return Err(invalid(c, "after object key:value pair")),
            }
        }
        self.depth -= 1;
        Ok(J::Obj(members))
    }

    fn array(&mut self) -> Result<J, String> {
        self.push(b'[')?;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(J::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_space();
            match self.next()? {
                b',' => {}
                b']' => break,
                c => return Err(invalid(c, "after array element")),
            }
        }
        self.depth -= 1;
        Ok(J::Arr(items))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    /// `stateNeg`, `state0`/`state1`, `stateDot`, `stateE`: the byte after the
    /// number is left for the caller's context.
    fn number(&mut self, first: u8) -> Result<J, String> {
        let start = self.i - 1;
        let mut c = first;
        if c == b'-' {
            c = self.next()?;
            if !c.is_ascii_digit() {
                return Err(invalid(c, "in numeric literal"));
            }
        }
        if c != b'0' {
            self.digits();
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let c = self.next()?;
            if !c.is_ascii_digit() {
                return Err(invalid(c, "after decimal point in numeric literal"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let mut c = self.next()?;
            if matches!(c, b'+' | b'-') {
                c = self.next()?;
            }
            if !c.is_ascii_digit() {
                return Err(invalid(c, "in exponent of numeric literal"));
            }
            self.digits();
        }
        Ok(J::Num(String::from_utf8_lossy(&self.b[start..self.i]).into_owned()))
    }

    fn literal(&mut self, rest: &[u8], name: &str) -> Result<(), String> {
        for &want in rest {
            let c = self.next()?;
            if c != want {
                return Err(invalid(c, &format!("in literal {name} (expecting {})", quote_char(want))));
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0;
        for _ in 0..4 {
            let c = self.next()?;
            let d = char::from(c).to_digit(16).ok_or_else(|| invalid(c, r"in \u hexadecimal character escape"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    /// A low surrogate escape right here, consumed only if it pairs.
    fn low_surrogate(&mut self) -> Option<u32> {
        let s = self.b.get(self.i..self.i + 6)?;
        if &s[..2] != br"\u" {
            return None;
        }
        let v = u32::from_str_radix(std::str::from_utf8(&s[2..]).ok()?, 16).ok()?;
        if (0xDC00..0xE000).contains(&v) {
            self.i += 6;
            Some(v)
        } else {
            None
        }
    }

    /// After the opening quote; Go's `unquote`: bad surrogates become U+FFFD.
    fn string(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        loop {
            let c = self.next()?;
            match c {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let e = self.next()?;
                    let ch = match e {
                        b'"' | b'\\' | b'/' => char::from(e),
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                self.low_surrogate().map(|lo| 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                Some(hi)
                            };
                            code.and_then(char::from_u32).unwrap_or('\u{FFFD}')
                        }
                        _ => return Err(invalid(e, "in string escape code")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(invalid(c, "in string literal")),
                c => out.push(c),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Typed decoding

/// Where the decoder is, for `UnmarshalTypeError` texts (Go's `errorContext`):
/// the innermost struct type's name and the struct-field path from the root.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    strukt: &'static str,
    path: Vec<&'static str>,
}

impl Ctx {
    /// The context inside field `field` of struct `strukt` (Go type name without package).
    pub fn field(&self, strukt: &'static str, field: &'static str) -> Ctx {
        let mut path = self.path.clone();
        path.push(field);
        Ctx { strukt, path }
    }
}

/// Go's decode state: decoding goes on after a type error; the first one is returned.
#[derive(Debug, Default)]
pub struct Dec {
    first_error: Option<String>,
}

impl Dec {
    /// Records an `UnmarshalTypeError` for `value` (a kind, or `number 1.5`) into `go_type`.
    pub fn type_error(&mut self, ctx: &Ctx, value: &str, go_type: &str) {
        if self.first_error.is_some() {
            return;
        }
        self.first_error = Some(if ctx.strukt.is_empty() && ctx.path.is_empty() {
            format!("json: cannot unmarshal {value} into Go value of type {go_type}")
        } else {
            format!(
                "json: cannot unmarshal {value} into Go struct field {}.{} of type {go_type}",
                ctx.strukt,
                ctx.path.join(".")
            )
        });
    }

    /// The first type error, if any.
    pub fn finish(self) -> Result<(), String> {
        self.first_error.map_or(Ok(()), Err)
    }

    /// A `string`-kind field (`go_type` is its Go type, e.g. `string`): `null` leaves it.
    pub fn string(&mut self, ctx: &Ctx, j: &J, go_type: &str, out: &mut String) {
        match j {
            J::Str(s) => s.clone_into(out),
            J::Null => {}
            other => self.type_error(ctx, other.kind(), go_type),
        }
    }

    /// A `bool` field: `null` leaves it.
    pub fn bool(&mut self, ctx: &Ctx, j: &J, out: &mut bool) {
        match j {
            J::Bool(b) => *out = *b,
            J::Null => {}
            other => self.type_error(ctx, other.kind(), "bool"),
        }
    }

    /// A Go `int` (64-bit) field: only integer literals fit (`strconv.ParseInt`).
    pub fn int(&mut self, ctx: &Ctx, j: &J, out: &mut i64) {
        match j {
            J::Num(raw) => match raw.parse::<i64>() {
                Ok(v) => *out = v,
                Err(_) => self.type_error(ctx, &format!("number {raw}"), "int"),
            },
            J::Null => {}
            other => self.type_error(ctx, other.kind(), "int"),
        }
    }

    /// A slice of a `string`-kind element type: `null` makes it nil, elements that are
    /// `null` are the zero value.
    pub fn strings(&mut self, ctx: &Ctx, j: &J, elem_type: &str, out: &mut Vec<String>) {
        match j {
            J::Arr(items) => {
                out.clear();
                for item in items {
                    let mut s = String::new();
                    self.string(ctx, item, elem_type, &mut s);
                    out.push(s);
                }
            }
            J::Null => out.clear(),
            other => self.type_error(ctx, other.kind(), &format!("[]{elem_type}")),
        }
    }

    /// The members of an object decoded into a map (`None`: the map is set to nil, or
    /// the value was of another kind and the error is recorded).
    pub fn map<'j>(&mut self, ctx: &Ctx, j: &'j J, go_type: &str) -> Option<&'j [(String, J)]> {
        match j {
            J::Obj(members) => Some(members),
            J::Null => None,
            other => {
                self.type_error(ctx, other.kind(), go_type);
                None
            }
        }
    }

    /// The fields of an object decoded into a struct with the given (JSON) field
    /// names: exact match first, then Go's case folding; unknown members dropped.
    /// `None` for `null` (struct left alone) or another kind (error recorded).
    pub fn fields<'j>(
        &mut self,
        ctx: &Ctx,
        j: &'j J,
        go_type: &str,
        names: &'static [&'static str],
    ) -> Option<Vec<(&'static str, &'j J)>> {
        let members = match j {
            J::Obj(members) => members,
            J::Null => return None,
            other => {
                self.type_error(ctx, other.kind(), go_type);
                return None;
            }
        };
        let matched = members
            .iter()
            .filter_map(|(k, v)| {
                let exact = names.iter().find(|n| **n == k.as_str());
                let name = exact.or_else(|| names.iter().find(|n| fold(n) == fold(k)))?;
                Some((*name, v))
            })
            .collect();
        Some(matched)
    }
}

/// Go v1's `foldName`: ASCII upper-cased, other runes as `ToUpper(ToLower(r))`
/// (so `ſ` matches `S` and the Kelvin sign matches `K`).
fn fold(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_ascii_uppercase()
            } else {
                let lower = c.to_lowercase().next().unwrap_or(c);
                lower.to_uppercase().next().unwrap_or(lower)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_read_like_go() {
        let cases: &[(&str, &str)] = &[
            ("", "EOF"),
            ("  \n", "EOF"),
            ("{", "unexpected EOF"),
            ("{\"a\":1", "unexpected EOF"),
            ("x", "invalid character 'x' looking for beginning of value"),
            ("{x", "invalid character 'x' looking for beginning of object key string"),
            ("{\"a\" 1}", "invalid character '1' after object key"),
            ("{\"a\":1 2}", "invalid character '2' after object key:value pair"),
            ("[1 2]", "invalid character '2' after array element"),
            ("[1,]", "invalid character ']' looking for beginning of value"),
            ("{\"a\":tru}", "invalid character '}' in literal true (expecting 'e')"),
            ("nul", "unexpected EOF"),
            ("-x", "invalid character 'x' in numeric literal"),
            ("1.x", "invalid character 'x' after decimal point in numeric literal"),
            ("1e+x", "invalid character 'x' in exponent of numeric literal"),
            ("\"a\nb\"", "invalid character '\\n' in string literal"),
            ("\"\\x\"", "invalid character 'x' in string escape code"),
            ("\"\\u12g4\"", "invalid character 'g' in \\u hexadecimal character escape"),
            ("{'a':1}", r"invalid character '\'' looking for beginning of object key string"),
        ];
        for (input, want) in cases {
            assert_eq!(decode_first(input.as_bytes()).unwrap_err(), *want, "input {input:?}");
        }
        let deep = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(|| {
                let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
                assert!(decode_first(ok.as_bytes()).is_ok());
                decode_first("[".repeat(MAX_DEPTH + 1).as_bytes()).unwrap_err()
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(deep, "invalid character '[' exceeded max depth");
    }

    #[test]
    fn values_keep_order_duplicates_and_literal_numbers() {
        let j = decode_first(br#" {"b":1.50,"a":[true,null],"b":"\u00e9\ud83d\ude00\ud800"} trailing garbage"#)
            .expect("decodes");
        let J::Obj(m) = j else { panic!("object") };
        assert_eq!(m[0], ("b".to_owned(), J::Num("1.50".to_owned())));
        assert_eq!(m[1].1, J::Arr(vec![J::Bool(true), J::Null]));
        assert_eq!(m[2].1, J::Str("é😀\u{FFFD}".to_owned()));
        assert_eq!(decode_first(b"12x").expect("number then garbage"), J::Num("12".to_owned()));
    }

    #[test]
    fn type_errors_keep_the_first_and_name_the_field_path() {
        let mut d = Dec::default();
        let ctx = Ctx::default().field("ServeConfig", "TCP").field("TCPPortHandler", "TCPForward");
        let mut s = String::new();
        d.string(&ctx, &J::Num("5".into()), "string", &mut s);
        let mut n = 0;
        d.int(&Ctx::default().field("T", "N"), &J::Num("1.5".into()), &mut n);
        assert_eq!(
            d.finish().unwrap_err(),
            "json: cannot unmarshal number into Go struct field TCPPortHandler.TCP.TCPForward of type string"
        );
        let mut d = Dec::default();
        d.int(&Ctx::default().field("T", "N"), &J::Num("1.5".into()), &mut n);
        assert_eq!(d.finish().unwrap_err(), "json: cannot unmarshal number 1.5 into Go struct field T.N of type int");
        let mut d = Dec::default();
        assert!(d.fields(&Ctx::default(), &J::Arr(vec![]), "ipn.ServeConfig", &["TCP"]).is_none());
        assert_eq!(d.finish().unwrap_err(), "json: cannot unmarshal array into Go value of type ipn.ServeConfig");
    }

    #[test]
    fn fields_match_exactly_then_by_folding() {
        let j = decode_first(r#"{"tcp":1,"Unknown":2,"ſervices":3}"#.as_bytes()).expect("decodes");
        let mut d = Dec::default();
        let f = d.fields(&Ctx::default(), &j, "T", &["TCP", "Services"]).expect("object");
        let names: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["TCP", "Services"]);
    }
}
