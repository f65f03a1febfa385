//! The Caddyfile tokenizer, following the rules of Caddy's own lexer
//! (`caddyconfig/caddyfile/lexer.go`):
//!
//! * tokens are separated by whitespace; `\r` is ignored;
//! * `#` starts a comment only at the start of a token (`a#b` is one token) and runs to the
//!   end of the line;
//! * `"…"` quotes a token; inside, `\"` is a quote and a backslash before a newline joins
//!   lines; any other backslash is kept as written (`"\d"` stays `\d`);
//! * `` `…` `` quotes a token verbatim (no escapes at all);
//! * outside quotes, a backslash at the end of a line continues the line (the next token
//!   stays on the same logical line), and `\x` keeps both characters;
//! * `{` and `}` are block delimiters only as whole, unquoted tokens (`{$ENV}`,
//!   `{http.request.host}` are ordinary tokens);
//! * `{$ENV}` / `{$ENV:default}` placeholders are kept verbatim (Caddy substitutes them
//!   before lexing; here the translator reports them instead of guessing a value);
//! * heredocs (`<<MARKER`) are not supported and are reported with their line.

use crate::Error;

/// One token with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The token's text, quotes removed.
    pub text: String,
    /// 1-based physical line the token starts on.
    pub line: usize,
    /// Logical line: physical lines joined by `\` continuations (or by newlines inside
    /// quotes) share one number. Directive arguments are the tokens on the same logical line.
    pub logical_line: usize,
    /// The token was quoted (`"…"` or `` `…` ``); a quoted `{` is not a block delimiter.
    pub quoted: bool,
}

impl Token {
    /// An unquoted token made up for a finding (a host name seen at `line`).
    pub(crate) fn plain(text: &str, line: usize) -> Token {
        Token { text: text.to_owned(), line, logical_line: 0, quoted: false }
    }

    /// True for an unquoted `{`.
    pub(crate) fn is_open(&self) -> bool {
        !self.quoted && self.text == "{"
    }

    /// True for an unquoted `}`.
    pub(crate) fn is_close(&self) -> bool {
        !self.quoted && self.text == "}"
    }
}

/// Splits Caddyfile source text into tokens.
///
/// # Errors
/// [`Error::UnterminatedQuote`] for a `"` or `` ` `` that is never closed and
/// [`Error::Heredoc`] for `<<MARKER` heredocs, each with the line it starts on.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, Error> {
    let mut lx = Lexer::new(src);
    while let Some(ch) = lx.chars.next() {
        match lx.mode {
            Mode::DoubleQuoted => lx.double_quoted(ch)?,
            Mode::Backtick => lx.backtick(ch)?,
            Mode::Plain => lx.plain(ch)?,
        }
    }
    lx.finish()
}

/// Where the lexer is: between or in an unquoted token, or inside quotes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    DoubleQuoted,
    Backtick,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    tokens: Vec<Token>,
    /// Physical and logical line of the next character.
    line: usize,
    logical: usize,
    mode: Mode,
    /// The token being read: its text, where it started, whether it was quoted.
    val: String,
    start: Option<(usize, usize)>,
    was_quoted: bool,
    /// The previous character was a backslash.
    escaped: bool,
    /// In a `#` comment (until the end of the line).
    comment: bool,
}

impl Lexer<'_> {
    fn new(src: &str) -> Lexer<'_> {
        Lexer {
            chars: src.chars().peekable(),
            tokens: Vec::new(),
            line: 1,
            logical: 1,
            mode: Mode::Plain,
            val: String::new(),
            start: None,
            was_quoted: false,
            escaped: false,
            comment: false,
        }
    }

    /// Ends the current token, if one was started.
    fn emit(&mut self) -> Result<(), Error> {
        if let Some((line, logical_line)) = self.start.take() {
            if !self.was_quoted && self.val.starts_with("<<") && self.val.len() > 2 {
                return Err(Error::Heredoc { line });
            }
            let text = std::mem::take(&mut self.val);
            self.tokens.push(Token { text, line, logical_line, quoted: self.was_quoted });
        }
        Ok(())
    }

    /// Inside `"…"`: `\"` is a quote, backslash-newline joins lines, other escapes stay.
    fn double_quoted(&mut self, ch: char) -> Result<(), Error> {
        if ch == '\n' {
            self.line += 1;
        }
        if self.escaped {
            self.escaped = false;
            if ch != '"' && ch != '\n' {
                self.val.push('\\');
            }
            self.val.push(ch);
            return Ok(());
        }
        match ch {
            '\\' => self.escaped = true,
            '"' => {
                self.mode = Mode::Plain;
                self.emit()?;
            }
            other => self.val.push(other),
        }
        Ok(())
    }

    /// Inside `` `…` ``: everything verbatim.
    fn backtick(&mut self, ch: char) -> Result<(), Error> {
        if ch == '`' {
            self.mode = Mode::Plain;
            return self.emit();
        }
        if ch == '\n' {
            self.line += 1;
        }
        self.val.push(ch);
        Ok(())
    }

    /// Outside quotes.
    fn plain(&mut self, ch: char) -> Result<(), Error> {
        if ch == '\r' {
            return Ok(());
        }
        if ch.is_whitespace() {
            return self.whitespace(ch);
        }
        if self.comment {
            return Ok(());
        }
        if ch == '#' && self.start.is_none() && !self.escaped {
            self.comment = true;
            return Ok(());
        }
        if self.start.is_none() {
            self.start = Some((self.line, self.logical));
            self.was_quoted = false;
            let quote = match ch {
                '"' if !self.escaped => Some(Mode::DoubleQuoted),
                '`' if !self.escaped => Some(Mode::Backtick),
                _ => None,
            };
            if let Some(mode) = quote {
                self.mode = mode;
                self.was_quoted = true;
                return Ok(());
            }
        }
        if self.escaped {
            self.val.push('\\');
            self.escaped = false;
        }
        if ch == '\\' {
            // Only decided by the next character: a newline continues the line.
            if self.val.is_empty() && self.chars.peek() == Some(&'\n') {
                // A lone `\` at the end of a line: no token, just a continuation.
                self.start = None;
            }
            self.escaped = true;
            return Ok(());
        }
        self.val.push(ch);
        Ok(())
    }

    /// Whitespace outside quotes ends the token; a newline also ends a comment and,
    /// unless escaped, the logical line.
    fn whitespace(&mut self, ch: char) -> Result<(), Error> {
        if ch == '\n' {
            self.line += 1;
            if self.escaped {
                // `\` + newline: the next token continues this logical line.
                self.escaped = false;
            } else {
                self.logical += 1;
            }
            self.comment = false;
        } else if self.escaped {
            // A backslash followed by a space is kept as written.
            self.val.push('\\');
            self.escaped = false;
        }
        self.emit()
    }

    fn finish(mut self) -> Result<Vec<Token>, Error> {
        if self.mode != Mode::Plain {
            let line = self.start.map_or(self.line, |(l, _)| l);
            let quote = if self.mode == Mode::DoubleQuoted { '"' } else { '`' };
            return Err(Error::UnterminatedQuote { line, quote });
        }
        if self.escaped {
            self.val.push('\\');
        }
        self.emit()?;
        Ok(self.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<String> {
        tokenize(src).expect("lex").into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn words_braces_and_lines() {
        let toks = tokenize("a b {\n  c d\n}\n").expect("lex");
        let got: Vec<(&str, usize, bool)> = toks.iter().map(|t| (t.text.as_str(), t.line, t.is_open())).collect();
        assert_eq!(
            got,
            [("a", 1, false), ("b", 1, false), ("{", 1, true), ("c", 2, false), ("d", 2, false), ("}", 3, false)]
        );
        assert!(toks[5].is_close());
    }

    #[test]
    fn comments_only_at_token_start() {
        assert_eq!(texts("a # comment {\nb#c d # x\n"), ["a", "b#c", "d"]);
        assert_eq!(texts("# whole line\n\n  # indented\nx"), ["x"]);
    }

    #[test]
    fn double_quotes_and_escapes() {
        let toks = tokenize(r#"respond "hello \"world\"" "a\d" "{" "#).expect("lex");
        assert_eq!(toks[1].text, "hello \"world\"");
        assert_eq!(toks[2].text, "a\\d", "other escapes are kept verbatim");
        assert!(toks[3].quoted && !toks[3].is_open(), "a quoted brace is not a block");
    }

    #[test]
    fn quoted_newlines_keep_the_logical_line() {
        let toks = tokenize("a \"x\ny\" b\nc").expect("lex");
        assert_eq!(toks[1].text, "x\ny");
        assert_eq!((toks[2].text.as_str(), toks[2].line, toks[2].logical_line), ("b", 2, 1));
        assert_eq!((toks[3].line, toks[3].logical_line), (3, 2));
    }

    #[test]
    fn backticks_are_verbatim() {
        assert_eq!(texts(r#"header `a "b" \c`"#), ["header", r#"a "b" \c"#]);
    }

    #[test]
    fn line_continuation() {
        let toks = tokenize("copy_headers A \\\n    B \\\n    C\nnext").expect("lex");
        let got: Vec<(&str, usize, usize)> = toks.iter().map(|t| (t.text.as_str(), t.line, t.logical_line)).collect();
        assert_eq!(got, [("copy_headers", 1, 1), ("A", 1, 1), ("B", 2, 1), ("C", 3, 1), ("next", 4, 2)]);
        // Directly after a token, too.
        let toks = tokenize("a b\\\nc\nd").expect("lex");
        assert_eq!(toks.iter().map(|t| t.logical_line).collect::<Vec<_>>(), [1, 1, 1, 2]);
        assert_eq!(toks[1].text, "b");
    }

    #[test]
    fn placeholders_are_kept_verbatim() {
        assert_eq!(
            texts("root * {$ERROR_PAGES:/srv/errors} {http.request.host}"),
            ["root", "*", "{$ERROR_PAGES:/srv/errors}", "{http.request.host}"]
        );
        assert!(!tokenize("{$X}").expect("lex")[0].is_open());
    }

    #[test]
    fn backslash_inside_a_token_is_kept() {
        assert_eq!(texts(r"path_regexp ^/a\.b$"), ["path_regexp", r"^/a\.b$"]);
    }

    #[test]
    fn crlf_is_ignored() {
        let toks = tokenize("a {\r\n b\r\n}\r\n").expect("lex");
        assert_eq!(
            toks.iter().map(|t| (t.text.as_str(), t.line)).collect::<Vec<_>>(),
            [("a", 1), ("{", 1), ("b", 2), ("}", 3)]
        );
    }

    #[test]
    fn errors_carry_lines() {
        assert_eq!(tokenize("a\nb \"open\n\n").unwrap_err(), Error::UnterminatedQuote { line: 2, quote: '"' });
        assert_eq!(tokenize("a `x").unwrap_err(), Error::UnterminatedQuote { line: 1, quote: '`' });
        assert_eq!(tokenize("a\nrespond <<EOF\nx\nEOF").unwrap_err(), Error::Heredoc { line: 2 });
        // `<<` alone is an ordinary token.
        assert_eq!(texts("a <<"), ["a", "<<"]);
    }
}
