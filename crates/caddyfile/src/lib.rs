//! Read a Caddyfile and translate it into snirouter's TOML configuration — the engine of
//! `snirouter import-caddyfile`.
//!
//! The supported subset is what the owner's NixOS gateway generated for Caddy +
//! caddy-tailscale: one site block per service (`grafana.example.com` and/or
//! `https://grafana.TAILNET.ts.net`) with `bind tailscale/NAME`,
//! `tls { get_certificate tailscale }`, `reverse_proxy` (with
//! `transport http { tls_insecure_skip_verify }`, `header_up Host …`), `forward_auth … { uri …
//! copy_headers … }`, `import cors`, `handle_errors`, `request_body { max_size … }`, path
//! routing with `handle`/`handle_path`, `log`, and the global `servers { max_header_size … }`.
//!
//! Nothing is dropped silently: every directive is either translated, explained as having
//! no equivalent ([`Translation::notes`]), or reported as not translated
//! ([`Translation::untranslated`]) — each with its line, on stderr and as a comment in the
//! generated TOML.
//!
//! ```
//! let src = "https://grafana.tail1234.ts.net {\n  bind tailscale/grafana\n  tls {\n    get_certificate tailscale\n  }\n  reverse_proxy 127.0.0.1:3000\n}\n";
//! let t = snirouter_caddyfile::translate(src, "Caddyfile").expect("a valid Caddyfile");
//! assert!(t.untranslated.is_empty());
//! assert!(t.toml.contains("[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n"));
//! ```
//!
//! Modules: [`lexer`] (tokens, following Caddy's lexer rules), [`parser`] (blocks and
//! directives), [`translate`](mod@translate) (directives → services) and the TOML writer.

#![forbid(unsafe_code)]
mod lexer;
mod model;
mod parser;
mod public;
mod render;
mod translate;

pub use translate::{Finding, Translation, translate};

/// A Caddyfile that cannot be read at all (lexing or block structure), with its line.
/// Directives that are read but cannot be translated are [`Finding`]s instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `"` or `` ` `` quote that is never closed.
    #[error("line {line}: unterminated {quote} quote")]
    UnterminatedQuote {
        /// Line the quoted token starts on.
        line: usize,
        /// The quote character.
        quote: char,
    },
    /// A heredoc (`<<MARKER`).
    #[error("line {line}: heredocs (<<MARKER) are not supported; write the text as a quoted string")]
    Heredoc {
        /// Line of the heredoc marker.
        line: usize,
    },
    /// A `}` that closes nothing.
    #[error("line {line}: `}}` without a matching `{{`")]
    UnexpectedClose {
        /// Line of the stray `}`.
        line: usize,
    },
    /// A block that is never closed.
    #[error("line {line}: the block opened here is never closed (missing `}}`)")]
    UnclosedBlock {
        /// Line of the `{`.
        line: usize,
    },
    /// Any other structural problem.
    #[error("line {line}: {message}")]
    Syntax {
        /// Where.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// The 1-based line the problem is on.
    pub fn line(&self) -> usize {
        match self {
            Error::UnterminatedQuote { line, .. }
            | Error::Heredoc { line }
            | Error::UnexpectedClose { line }
            | Error::UnclosedBlock { line }
            | Error::Syntax { line, .. } => *line,
        }
    }
}
