//! Diagnostics: what is wrong, where (file:line:column, service, host) and what to do about it.
//!
//! Input errors are collected, never thrown one at a time, so a user sees every problem of a
//! file in one run. [`SourceFile`] turns a JSON pointer into a line and column on demand: the
//! happy path never pays for positions.
//!
//! A leaf: depends on [`crate::suggest`] only.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a file, 1-based like every editor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as shown to the user (relative to the config repository when inside it).
    pub file: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters (not bytes).
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem with the user's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is, when a line is known.
    pub location: Option<Location>,
    /// The file when no line is known.
    pub file: Option<PathBuf>,
    /// The environment whose effective spec has the problem (when an overlay is involved).
    pub env: Option<String>,
    /// The service the problem is about.
    pub service: Option<String>,
    /// What is wrong, in a sentence without its location (shown after it).
    pub message: String,
    /// What to do about it, shown on the next line after `help: `.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with nothing but its message; the builders below add the rest.
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic { location: None, file: None, env: None, service: None, message: message.into(), hint: None }
    }

    /// Sets where the problem is (`None` leaves it unknown).
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// Names the file the problem is in, when no line is known.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Names the environment whose effective spec has the problem.
    pub fn env(mut self, env: impl Into<String>) -> Self {
        self.env = Some(env.into());
        self
    }

    /// Names the service the problem is about.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Says what to do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        } else if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(env) = &self.env {
            write!(f, "env `{env}`: ")?;
        }
        if let Some(service) = &self.service {
            write!(f, "service `{service}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// Several diagnostics shown together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\nerror: ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} problems found; nothing was changed", self.0.len())?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// One segment of a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key of an object.
    Key(String),
    /// A position in an array, from 0.
    Index(usize),
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Key(k) => f.write_str(&k.replace('~', "~0").replace('/', "~1")),
            Segment::Index(i) => write!(f, "{i}"),
        }
    }
}

/// Formats segments as an RFC 6901 JSON pointer.
pub fn pointer(segments: &[Segment]) -> String {
    segments.iter().map(|s| format!("/{s}")).collect()
}

/// A JSON file the user wrote, kept so errors can point into it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path shown to the user (relative to the config repository).
    pub display: PathBuf,
    /// The file's text, without a leading byte order mark.
    pub text: String,
}

/// The UTF-8 byte order mark some Windows editors put at the start of a file.
pub const BOM: char = '\u{feff}';

/// `text` without a leading UTF-8 byte order mark. JSON (RFC 8259) forbids one, but editors
/// write it; it carries no content, and leaving it out keeps line 1's columns as the editor
/// shows them.
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// [`without_bom`] of an owned text, without copying when there is no mark.
pub fn strip_bom(text: String) -> String {
    match text.strip_prefix(BOM) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

impl SourceFile {
    /// A file read for parsing; a leading byte order mark is dropped (see [`without_bom`]).
    pub fn new(display: impl AsRef<Path>, text: String) -> Self {
        SourceFile { display: display.as_ref().to_path_buf(), text: strip_bom(text) }
    }

    /// Where the value at `segments` starts; for a key that is missing, where its object starts.
    /// `key_position` points at the key rather than the value (for "unknown field" errors).
    pub fn locate(&self, segments: &[Segment], key_position: bool) -> Location {
        let offset = Locator::new(&self.text).find(segments, key_position).unwrap_or(0);
        self.location_of(offset)
    }

    /// The line and column of a byte offset of the text (past the end: the end).
    pub fn location_of(&self, offset: usize) -> Location {
        let before = &self.text.as_bytes()[..offset.min(self.text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let column = self.text[line_start..offset.min(self.text.len())].chars().count() + 1;
        Location { file: self.display.clone(), line, column }
    }

    /// A location from serde_json's 1-based line and column.
    pub fn location_at(&self, line: usize, column: usize) -> Location {
        Location { file: self.display.clone(), line: line.max(1), column: column.max(1) }
    }

    /// A diagnostic for a JSON syntax error of this file.
    pub fn syntax_error(&self, err: &serde_json::Error) -> Diagnostic {
        let message = strip_position(&err.to_string());
        let (mut line, mut column) = (err.line(), err.column());
        if column == 0 && line > 1 {
            // serde_json reports a raw newline inside a string at column 0 of the next line;
            // the problem is at the end of the line before.
            line -= 1;
            column = self.text.lines().nth(line - 1).map_or(0, |l| l.chars().count()) + 1;
        }
        Diagnostic::new(format!("invalid JSON: {message}"))
            .at(Some(self.location_at(line, column)))
            .hint("fix the JSON syntax; `enact fmt` rewrites a file that parses")
    }

    /// Keys that appear twice in one object (serde_json keeps the last one silently), with
    /// the path of the second one.
    pub fn duplicate_keys(&self) -> Vec<(Vec<Segment>, Location)> {
        let mut found = Vec::new();
        let mut locator = Locator::new(&self.text);
        locator.skip_ws();
        locator.duplicates(&mut Vec::new(), &mut found, 0);
        found.into_iter().map(|(path, offset)| (path, self.location_of(offset))).collect()
    }

    /// The source text of the value at `segments` (a number as written, say).
    pub fn raw_value(&self, segments: &[Segment]) -> Option<&str> {
        let start = Locator::new(&self.text).find(segments, false)?;
        let mut end = Locator::new(&self.text);
        end.pos = start;
        end.skip_value()?;
        self.text.get(start..end.pos)
    }
}

/// serde's type names in words a user of the JSON knows.
fn friendly(message: &str) -> String {
    message
        .replace("expected i64", "expected a whole number")
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace("expected u32", "expected a whole number from 0 to 4294967295")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected a list")
        .replace("invalid type: sequence", "invalid type: list")
        .replace("expected a map", "expected an object")
        .replace("invalid type: map", "invalid type: object")
}

/// The command that prints the JSON Schema of `source`'s kind of file.
fn schema_command(source: &SourceFile) -> &'static str {
    if source.display.file_name().is_some_and(|f| f == "enact.json") {
        "enact schema enact.json"
    } else {
        "enact schema"
    }
}

/// For serde's "invalid type: string \"abc\", expected a whole number" about `field` (the last
/// segment of its path) in `source`: how to write it, and where every field's type is listed.
fn type_hint(message: &str, field: Option<&Segment>, source: &SourceFile) -> Option<String> {
    let (_, expected) = message.strip_prefix("invalid type: ")?.split_once(", expected ")?;
    let field = match field {
        Some(Segment::Key(field)) => format!("`{field}`"),
        _ => "the value".to_string(),
    };
    Some(format!("write {field} as {expected} (`{}` gives every field's type)", schema_command(source)))
}

/// serde_json appends " at line L column C"; the location is shown in front instead.
pub fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A small scanner over valid JSON that finds the byte offset of the value a pointer names.
struct Locator<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator { bytes: text.as_bytes(), pos: 0 }
    }

    fn find(mut self, segments: &[Segment], key_position: bool) -> Option<usize> {
        self.skip_ws();
        let mut best = self.pos;
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match (segment, self.peek()?) {
                (Segment::Key(key), b'{') => {
                    let object_start = self.pos;
                    match self.find_key(key)? {
                        Some(key_start) => {
                            if last && key_position {
                                return Some(key_start);
                            }
                        }
                        None => return Some(object_start),
                    }
                }
                (Segment::Index(index), b'[') => {
                    let array_start = self.pos;
                    if !self.find_index(*index)? {
                        return Some(array_start);
                    }
                }
                _ => return Some(best),
            }
            best = self.pos;
        }
        Some(self.pos)
    }

    /// Walks the value here, recording keys seen twice in an object.
    fn duplicates(
        &mut self,
        path: &mut Vec<Segment>,
        found: &mut Vec<(Vec<Segment>, usize)>,
        depth: usize,
    ) -> Option<()> {
        if depth > 256 {
            return self.skip_value();
        }
        self.skip_ws();
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                let mut seen = std::collections::HashSet::new();
                loop {
                    if !self.next_item(b'}')? {
                        return Some(());
                    }
                    let key_start = self.pos;
                    let key = self.read_string()?;
                    self.skip_ws();
                    self.pos += 1; // ':'
                    path.push(Segment::Key(key.clone()));
                    if !seen.insert(key) {
                        found.push((path.clone(), key_start));
                    }
                    self.duplicates(path, found, depth + 1)?;
                    path.pop();
                }
            }
            b'[' => {
                self.pos += 1;
                let mut index = 0;
                loop {
                    if !self.next_item(b']')? {
                        return Some(());
                    }
                    path.push(Segment::Index(index));
                    self.duplicates(path, found, depth + 1)?;
                    path.pop();
                    index += 1;
                }
            }
            _ => self.skip_value(),
        }
    }

    /// Inside an object or array: skips whitespace and commas; false (and past it) at `close`,
    /// true when an item starts here.
    fn next_item(&mut self, close: u8) -> Option<bool> {
        loop {
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b if b == close => {
                    self.pos += 1;
                    return Some(false);
                }
                _ => return Some(true),
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Positions at the value of `key` in the object here; Some(None) when there is no such key.
    fn find_key(&mut self, key: &str) -> Option<Option<usize>> {
        self.pos += 1; // '{'
        loop {
            self.skip_ws();
            match self.peek()? {
                b'}' => return Some(None),
                b',' => {
                    self.pos += 1;
                    continue;
                }
                b'"' => {}
                _ => return None,
            }
            let key_start = self.pos;
            let name = self.read_string()?;
            self.skip_ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.skip_ws();
            if name == key {
                return Some(Some(key_start));
            }
            self.skip_value()?;
        }
    }

    fn find_index(&mut self, index: usize) -> Option<bool> {
        self.pos += 1; // '['
        let mut i = 0;
        loop {
            self.skip_ws();
            match self.peek()? {
                b']' => return Some(false),
                b',' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            if i == index {
                return Some(true);
            }
            self.skip_value()?;
            i += 1;
        }
    }

    fn read_string(&mut self) -> Option<String> {
        let start = self.pos;
        self.skip_string()?;
        serde_json::from_slice(&self.bytes[start..self.pos]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        self.pos += 1; // opening quote
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => self.pos += 1,
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                while let Some(b) = self.peek() {
                    if b == b',' || b == b'}' || b == b']' || b.is_ascii_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
                Some(())
            }
        }
    }
}

/// As [`from_value_located`] for a JSON object, but every field of the object that serde
/// refuses is reported, not only the first: the field an error is in (an unknown one, or one
/// whose value is wrong) is taken out and the object read again, until it reads or fails at the
/// object itself (a missing field). A field taken out is not then reported missing.
///
/// # Errors
/// One problem per refused field of `object`, in the file's order, then a problem of the object
/// itself, each located.
pub fn from_object_located<T: serde::de::DeserializeOwned>(
    object: &serde_json::Map<String, serde_json::Value>,
    source: &SourceFile,
    base: &[Segment],
) -> Result<T, Vec<Diagnostic>> {
    let mut object = object.clone();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut taken_out: Vec<String> = Vec::new();
    let in_file_order = |mut errors: Vec<Diagnostic>| {
        errors.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
        errors
    };
    loop {
        let d = match from_value_located::<T>(&serde_json::Value::Object(object.clone()), source, base) {
            Ok(read) if errors.is_empty() => return Ok(read),
            Ok(_) => return Err(in_file_order(errors)),
            Err(d) => d,
        };
        let missing = d.message.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')).map(|(f, _)| f);
        if missing.is_some_and(|field| taken_out.iter().any(|t| t == field)) {
            return Err(in_file_order(errors));
        }
        let field = field_at(&object, &d, source, base);
        errors.push(d);
        match field {
            Some(field) => {
                object.shift_remove(&field);
                taken_out.push(field);
            }
            None => return Err(in_file_order(errors)),
        }
    }
}

/// The field of `object` (which sits at `base` in `source`) whose key or value `d` is located
/// in: the last key at or before `d`'s place. `None` for a problem of the object itself.
fn field_at(
    object: &serde_json::Map<String, serde_json::Value>,
    d: &Diagnostic,
    source: &SourceFile,
    base: &[Segment],
) -> Option<String> {
    let at = d.location.as_ref()?;
    let object_at = source.locate(base, false);
    if (at.line, at.column) <= (object_at.line, object_at.column) {
        return None;
    }
    object
        .keys()
        .filter_map(|key| {
            let mut here = base.to_vec();
            here.push(Segment::Key(key.clone()));
            let found = source.locate(&here, true);
            ((found.line, found.column) <= (at.line, at.column)).then_some(((found.line, found.column), key))
        })
        .max()
        .map(|(_, key)| key.clone())
}

/// Deserializes `value` as `T`, turning a failure into a diagnostic located in `source` at the
/// exact field (`base` is where `value` sits in the file).
///
/// # Errors
/// The first field serde refuses (unknown, mistyped, out of range), located, with the closest
/// known name for a misspelt field or value.
pub fn from_value_located<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    source: &SourceFile,
    base: &[Segment],
) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut segments = base.to_vec();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => {
                    segments.push(Segment::Index(*index));
                }
                serde_path_to_error::Segment::Map { key } => {
                    segments.push(Segment::Key(key.clone()));
                }
                serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
            }
        }
        let inner = friendly(&err.into_inner().to_string());
        let unknown = inner.starts_with("unknown field");
        if inner.starts_with("invalid type: floating point")
            && let Some(Segment::Key(field)) = segments.last()
        {
            let raw = source.raw_value(&segments).unwrap_or("the number").to_string();
            let message = if field == "port" {
                format!("`port` {raw} is outside 1–65535")
            } else {
                format!("`{field}` {raw} is not a whole number in range")
            };
            return Diagnostic::new(message).at(Some(source.locate(&segments, false)));
        }
        // "unknown field `prot`, expected one of `name`, `port`, …": say which one was meant.
        let suggestion = if unknown || inner.starts_with("unknown variant") {
            let names = crate::suggest::names_in_serde_message(&inner);
            names.split_first().and_then(|(typed, expected)| {
                crate::suggest::closest(typed, expected.iter().copied()).map(|c| (typed.to_string(), c.to_string()))
            })
        } else {
            None
        };
        let type_hint = type_hint(&inner, segments.last(), source);
        let message = match &suggestion {
            Some((typed, meant)) if unknown => format!("unknown field `{typed}`: did you mean `{meant}`?"),
            _ if unknown => inner,
            Some((typed, meant)) => {
                let value = format!("unknown value `{typed}`: did you mean `{meant}`?");
                if segments.len() > base.len() {
                    format!("{}: {value}", pointer(&segments[base.len()..]))
                } else {
                    value
                }
            }
            None if segments.len() > base.len() => format!("{}: {inner}", pointer(&segments[base.len()..])),
            None => inner,
        };
        let mut d = Diagnostic::new(message).at(Some(source.locate(&segments, unknown)));
        if let Some(hint) = type_hint {
            d = d.hint(hint);
        }
        if unknown {
            let schema = schema_command(source);
            d = d.hint(if suggestion.is_some() {
                format!("fix its spelling, or remove the field (`{schema}` lists every field)")
            } else {
                format!("remove the field or fix its spelling (`{schema}` lists every field)")
            });
        }
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_string())
    }

    #[test]
    fn locates_nested_values_and_keys() {
        let text = "{\n  \"a\": [1, {\"b\": \"x\"}],\n  \"c\": {\"d\": null}\n}\n";
        let src = SourceFile::new("f.json", text.to_string());
        let at = src.locate(&[key("a"), Segment::Index(1), key("b")], false);
        assert_eq!((at.line, at.column), (2, 18));
        let at = src.locate(&[key("c"), key("d")], true);
        assert_eq!((at.line, at.column), (3, 9));
        // A missing key points at its object.
        let at = src.locate(&[key("c"), key("zzz")], false);
        assert_eq!((at.line, at.column), (3, 8));
    }

    #[test]
    fn strings_with_brackets_do_not_confuse_the_scanner() {
        let text = r#"{"a": "}]\"{", "b": 2}"#;
        let src = SourceFile::new("f.json", text.to_string());
        let at = src.locate(&[key("b")], false);
        assert_eq!(at.column, 21);
    }

    #[test]
    fn pointer_escapes_segments() {
        assert_eq!(pointer(&[key("a/b"), Segment::Index(3)]), "/a~1b/3");
    }
}
