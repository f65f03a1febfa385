//! Diagnostics: what is wrong, where (file, line, column, key path) and how to fix it.

use std::fmt;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file name (or other label) given to [`crate::parse`] / [`crate::load`].
    pub origin: String,
    /// 1-based line of the offending key or value; 0 when there is no position (e.g. I/O errors).
    pub line: usize,
    /// 1-based column (in characters); 0 when there is no position.
    pub column: usize,
    /// Dotted TOML key path, e.g. `services.grafana.routes[1].upstream`; empty for file-level problems.
    pub key_path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something more specific to say than the message.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `{origin}:{line}:{column}: {key_path}: {message}` followed by `\n  help: {help}`.
    ///
    /// Without a position the `:{line}:{column}` part is left out, and without a key path the
    /// `{key_path}: ` part is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All problems found in one configuration file; never empty when returned as `Err`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no problems (never the case for a returned `Err`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the problems in report order (by line, then column).
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    /// One diagnostic per line (a diagnostic with help takes two lines).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Maps byte offsets in the source to 1-based line and column (columns count characters).
#[derive(Debug)]
pub(crate) struct LineIndex<'s> {
    source: &'s str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(crate) fn new(source: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    /// 1-based `(line, column)` of byte `offset` (clamped to the end of the source).
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line_idx = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line_idx).copied().unwrap_or(0);
        let column = self.source.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line_idx + 1, column + 1)
    }
}

/// Collects diagnostics for one source file.
#[derive(Debug)]
pub(crate) struct Sink<'s> {
    pub(crate) origin: String,
    pub(crate) index: LineIndex<'s>,
    pub(crate) items: Vec<Diagnostic>,
}

impl<'s> Sink<'s> {
    pub(crate) fn new(origin: &str, source: &'s str) -> Self {
        Sink { origin: origin.to_owned(), index: LineIndex::new(source), items: Vec::new() }
    }

    /// Line/column for an optional span start; `(0, 0)` without a span.
    pub(crate) fn pos(&self, span: Option<&std::ops::Range<usize>>) -> (usize, usize) {
        span.map_or((0, 0), |s| self.index.position(s.start))
    }

    /// Records a problem at `span`.
    pub(crate) fn error(
        &mut self,
        span: Option<&std::ops::Range<usize>>,
        key_path: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = self.pos(span);
        self.items.push(Diagnostic {
            origin: self.origin.clone(),
            line,
            column,
            key_path: key_path.to_owned(),
            message: message.into(),
            help,
        });
    }

    /// Sorted diagnostics (positioned ones by line/column first, unpositioned ones last).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| (d.line == 0, d.line, d.column));
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let idx = LineIndex::new("ab\ncé d\n\nx");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(2), (1, 3));
        assert_eq!(idx.position(3), (2, 1));
        // 'é' is two bytes; 'd' is the 3rd character after it.
        assert_eq!(idx.position(7), (2, 4));
        assert_eq!(idx.position(9), (3, 1));
        assert_eq!(idx.position(10), (4, 1));
        assert_eq!(idx.position(999), (4, 2));
    }

    #[test]
    fn display() {
        let d = Diagnostic {
            origin: "a.toml".into(),
            line: 3,
            column: 7,
            key_path: "listen.https".into(),
            message: "bad".into(),
            help: Some("fix it".into()),
        };
        assert_eq!(d.to_string(), "a.toml:3:7: listen.https: bad\n  help: fix it");
        let e = Diagnostic { line: 0, column: 0, key_path: String::new(), help: None, ..d };
        assert_eq!(e.to_string(), "a.toml: bad");
    }
}
