//! From tokens to the Caddyfile's structure: an optional global options block, snippets
//! `(name) { … }`, and site blocks `ADDRESS[, ADDRESS…] { directives }`.
//!
//! A directive is the tokens on one logical line (name and arguments), optionally ending in
//! `{` that opens a nested block of directives. Snippet imports are *not* expanded here; the
//! translator does that so it can tell `import cors` apart from other snippets.

use crate::Error;
use crate::lexer::{Token, tokenize};
use crate::model::Finding;

/// One directive (or sub-directive) with its arguments and optional block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directive {
    /// The directive's name token (`reverse_proxy`, `uri`, `@name`, …).
    pub name: Token,
    /// The arguments on the same logical line.
    pub args: Vec<Token>,
    /// The `{ … }` block, if any.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// A directive with only a name: a stand-in for a site address in findings.
    pub(crate) fn bare(name: Token) -> Directive {
        Directive { name, args: Vec::new(), block: None }
    }

    /// A finding about this directive, at its line.
    pub(crate) fn finding(&self, message: impl Into<String>) -> Finding {
        Finding { line: self.line(), directive: self.summary(), message: message.into() }
    }

    /// The line the directive starts on.
    pub(crate) fn line(&self) -> usize {
        self.name.line
    }

    /// A copy with `{args[N]}` / `{args.N}` replaced by the snippet's `import` arguments
    /// (`args[0]` is the first after the snippet name), in every token of the tree.
    pub(crate) fn with_args(&self, args: &[&str]) -> Directive {
        let sub = |t: &Token| {
            let mut text = t.text.clone();
            for (i, a) in args.iter().enumerate() {
                text = text.replace(&format!("{{args[{i}]}}"), a).replace(&format!("{{args.{i}}}"), a);
            }
            Token { text, ..t.clone() }
        };
        Directive {
            name: sub(&self.name),
            args: self.args.iter().map(sub).collect(),
            block: self.block.as_ref().map(|b| b.iter().map(|d| d.with_args(args)).collect()),
        }
    }

    /// Argument texts.
    pub(crate) fn arg_texts(&self) -> Vec<&str> {
        self.args.iter().map(|t| t.text.as_str()).collect()
    }

    /// The directive as written on its first line, for messages: `name arg arg {`.
    pub(crate) fn summary(&self) -> String {
        let mut s = self.name.text.clone();
        for a in &self.args {
            s.push(' ');
            if a.quoted || a.text.contains(char::is_whitespace) {
                s.push_str(&format!("{:?}", a.text));
            } else {
                s.push_str(&a.text);
            }
        }
        if self.block.is_some() {
            s.push_str(" { … }");
        }
        s
    }

    /// The sub-directives (empty without a block).
    pub(crate) fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// A site block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Site {
    /// The site addresses (trailing commas removed).
    pub addresses: Vec<Token>,
    /// The directives of the site.
    pub directives: Vec<Directive>,
}

impl Site {
    /// The line of the first address.
    pub(crate) fn line(&self) -> usize {
        self.addresses.first().map_or(0, |t| t.line)
    }

    /// A stand-in directive for the site line itself (for findings about the site).
    pub(crate) fn as_directive(&self) -> Directive {
        Directive::bare(self.addresses.first().cloned().unwrap_or_else(|| Token::plain("", self.line())))
    }
}

/// A snippet `(name) { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snippet {
    /// Its name, without parentheses.
    pub name: String,
    /// Line of the definition.
    pub line: usize,
    /// Its directives.
    pub directives: Vec<Directive>,
}

/// A whole Caddyfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Caddyfile {
    /// The global options block (`{ … }` first in the file), as directives.
    pub global: Option<Vec<Directive>>,
    /// Snippet definitions in file order.
    pub snippets: Vec<Snippet>,
    /// Site blocks in file order.
    pub sites: Vec<Site>,
}

/// Tokenizes and parses Caddyfile source.
///
/// # Errors
/// Lexer errors, unbalanced braces, a site or snippet without a block (except the single
/// block-less site Caddy allows), each with its line.
pub(crate) fn parse(src: &str) -> Result<Caddyfile, Error> {
    let tokens = tokenize(src)?;
    Parser { tokens: &tokens, pos: 0 }.file()
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn file(&mut self) -> Result<Caddyfile, Error> {
        let mut out = Caddyfile::default();
        // Global options: a `{` as the very first token.
        if self.peek().is_some_and(Token::is_open) {
            self.pos += 1;
            out.global = Some(self.block_body()?);
        }
        while let Some(tok) = self.peek() {
            if tok.is_close() {
                return Err(Error::UnexpectedClose { line: tok.line });
            }
            if tok.is_open() {
                return Err(Error::Syntax {
                    line: tok.line,
                    message: "a block `{` without a site address (only the first block may be the global options)"
                        .to_owned(),
                });
            }
            if !tok.quoted && tok.text.len() > 2 && tok.text.starts_with('(') && tok.text.ends_with(')') {
                let line = tok.line;
                let name = tok.text[1..tok.text.len() - 1].to_owned();
                self.pos += 1;
                match self.peek() {
                    Some(t) if t.is_open() && t.logical_line == self.tokens[self.pos - 1].logical_line => {
                        self.pos += 1;
                    }
                    _ => {
                        return Err(Error::Syntax {
                            line,
                            message: format!("snippet ({name}) must be followed by `{{` on the same line"),
                        });
                    }
                }
                let directives = self.block_body()?;
                out.snippets.push(Snippet { name, line, directives });
                continue;
            }
            out.sites.push(self.site(out.sites.is_empty())?);
        }
        Ok(out)
    }

    /// Site addresses then `{ … }`; the first site may omit braces (then it takes the rest of
    /// the file).
    fn site(&mut self, first: bool) -> Result<Site, Error> {
        let mut addresses: Vec<Token> = Vec::new();
        loop {
            let Some(tok) = self.peek().cloned() else {
                let line = addresses.last().map_or(0, |t| t.line);
                return Err(Error::Syntax { line, message: "site address without a block".to_owned() });
            };
            if tok.is_open() {
                self.pos += 1;
                let directives = self.block_body()?;
                return Ok(Site { addresses: split_addresses(addresses), directives });
            }
            if tok.is_close() {
                return Err(Error::UnexpectedClose { line: tok.line });
            }
            let continues = addresses.last().is_none_or(|last| {
                last.logical_line == tok.logical_line || last.text.ends_with(',') || tok.text.starts_with(',')
            });
            if !continues {
                // Addresses ended without `{`: Caddy's single block-less site.
                if first {
                    let mut directives = Vec::new();
                    while self.peek().is_some() {
                        if let Some(t) = self.peek().filter(|t| t.is_close()) {
                            return Err(Error::UnexpectedClose { line: t.line });
                        }
                        directives.push(self.directive()?);
                    }
                    return Ok(Site { addresses: split_addresses(addresses), directives });
                }
                let line = addresses.last().map_or(tok.line, |t| t.line);
                return Err(Error::Syntax {
                    line,
                    message:
                        "site address must be followed by `{` (only a file with a single site may omit the braces)"
                            .to_owned(),
                });
            }
            addresses.push(tok);
            self.pos += 1;
        }
    }

    /// Directives until the matching `}` (consumed).
    fn block_body(&mut self) -> Result<Vec<Directive>, Error> {
        let open_line = self.tokens.get(self.pos.saturating_sub(1)).map_or(0, |t| t.line);
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(Error::UnclosedBlock { line: open_line }),
                Some(t) if t.is_close() => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => out.push(self.directive()?),
            }
        }
    }

    /// One directive: name, arguments on the same logical line, optional trailing `{`.
    fn directive(&mut self) -> Result<Directive, Error> {
        let name = self.tokens[self.pos].clone();
        if name.is_open() {
            return Err(Error::Syntax { line: name.line, message: "a block `{` without a directive name".to_owned() });
        }
        self.pos += 1;
        let mut args = Vec::new();
        while let Some(t) = self.peek() {
            if t.logical_line != name.logical_line {
                break;
            }
            if t.is_close() {
                // `}` on the directive's own line closes the enclosing block.
                break;
            }
            if t.is_open() {
                self.pos += 1;
                let block = self.block_body()?;
                return Ok(Directive { name, args, block: Some(block) });
            }
            args.push(t.clone());
            self.pos += 1;
        }
        Ok(Directive { name, args, block: None })
    }
}

/// `a.example, b.example` → two addresses (commas separate, as in Caddy).
fn split_addresses(tokens: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::new();
    for t in tokens {
        for part in t.text.split(',') {
            let part = part.trim();
            if !part.is_empty() {
                out.push(Token { text: part.to_owned(), ..t.clone() });
            }
        }
    }
    out
}

/// A site address: `[scheme://]host[:port][/path]`.
pub(crate) struct Address {
    pub(crate) scheme: Option<String>,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) path: Option<String>,
}

impl Address {
    pub(crate) fn parse(raw: &str) -> Option<Address> {
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, raw),
        };
        if scheme.as_deref().is_some_and(|s| s != "http" && s != "https") {
            return None;
        }
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
            None => (rest, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p.parse::<u16>().ok()?)),
            _ => (hostport, None),
        };
        Some(Address { scheme, host: host.trim_end_matches('.').to_ascii_lowercase(), port, path })
    }

    /// Whether it names a tailnet host (`*.ts.net`).
    pub(crate) fn is_tailnet(&self) -> bool {
        self.host.ends_with(".ts.net")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_snippet_and_sites() {
        let src = "{\n  servers {\n    max_header_size 5MB\n  }\n}\n(cors) {\n  header X 1\n}\na.example, https://a.ts.net {\n  reverse_proxy 127.0.0.1:1 {\n    transport http {\n      tls_insecure_skip_verify\n    }\n  }\n  import cors\n}\n";
        let f = parse(src).expect("parse");
        let global = f.global.expect("global");
        assert_eq!(global[0].name.text, "servers");
        assert_eq!(global[0].children()[0].arg_texts(), ["5MB"]);
        assert_eq!(f.snippets[0].name, "cors");
        assert_eq!(f.snippets[0].line, 6);
        let site = &f.sites[0];
        assert_eq!(
            site.addresses.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
            ["a.example", "https://a.ts.net"]
        );
        assert_eq!(site.line(), 9);
        let rp = &site.directives[0];
        assert_eq!((rp.name.text.as_str(), rp.line()), ("reverse_proxy", 10));
        assert_eq!(rp.children()[0].children()[0].name.text, "tls_insecure_skip_verify");
        assert_eq!(site.directives[1].summary(), "import cors");
    }

    #[test]
    fn addresses_across_lines_with_commas() {
        let f = parse("a.example,\nb.example {\n  respond ok\n}\n").expect("parse");
        assert_eq!(f.sites[0].addresses.len(), 2);
    }

    #[test]
    fn single_site_without_braces() {
        let f = parse("localhost\n\nreverse_proxy 127.0.0.1:9\nlog\n").expect("parse");
        assert_eq!(f.sites[0].directives.len(), 2);
    }

    #[test]
    fn one_line_blocks() {
        let f = parse("a { respond ok }\nb {\n  x { y }\n}\n").expect("parse");
        assert_eq!(f.sites[0].directives[0].arg_texts(), ["ok"]);
        assert_eq!(f.sites[1].directives[0].children()[0].name.text, "y");
    }

    #[test]
    fn errors_have_lines() {
        assert_eq!(parse("a {\n  b {\n").unwrap_err(), Error::UnclosedBlock { line: 2 });
        assert_eq!(parse("a {\n}\n}\n").unwrap_err(), Error::UnexpectedClose { line: 3 });
        assert!(matches!(parse("a {\n}\nb\nc\n").unwrap_err(), Error::Syntax { line: 3, .. }));
        assert!(matches!(parse("(s)\n{\n}\n").unwrap_err(), Error::Syntax { line: 1, .. }));
    }
}
