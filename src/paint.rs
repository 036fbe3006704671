//! Terminal colour, on only when asked for: a terminal, no `NO_COLOR`, no `--no-color`. A leaf:
//! depends on nothing of enact.

/// Wraps text in ANSI colours when enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Painter {
    /// Whether colours are written; when not, every method returns the text as it is.
    pub enabled: bool,
}

impl Painter {
    /// A painter that colours when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Painter { enabled }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    /// Green: what is created, what succeeded.
    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Red: what is destroyed, what failed.
    pub fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Yellow: what is changed in place, warnings.
    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Magenta: what is replaced.
    pub fn magenta(self, text: &str) -> String {
        self.paint("35", text)
    }

    /// Bold: headings and names.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Dim: what matters less (unchanged fields, notes).
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}
