//! The element tree of an XML document, with positions: every element's local name, where its
//! `<` is, the `xsi:` attributes that matter and its text (entities, character references and
//! CDATA resolved), built by quick-xml's namespace-aware reader. Malformed XML stops at its first
//! error; attribute problems are collected and the tree still built.

use std::path::{Path, PathBuf};

use quick_xml::NsReader;
use quick_xml::events::attributes::{AttrError, Attribute};
use quick_xml::events::{BytesCData, BytesRef, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;

use crate::diagnostic::{Diagnostic, Location};

/// The namespace of `xsi:type`, `xsi:nil` and the schema location hints.
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Deeper than any document of the XSD; a limit keeps hostile nesting from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// A NUL byte in text: XML allows it in no form (not even `&#0;`), so a document holding one is
/// damaged, and a spec read from it could not be exported again.
const NUL_MESSAGE: &str = "malformed XML: a NUL character (U+0000), which XML never allows";
const NUL_HINT: &str = "remove it; a NUL byte in a text file is often a sign of damage (a copy cut short, binary data)";

/// One element of the document: its local name, position, the `xsi:` attributes that matter
/// and its content. Text is concatenated (entities, character references and CDATA resolved).
#[derive(Debug)]
pub(super) struct Element {
    pub(super) name: String,
    /// Byte offset of its `<`.
    pub(super) pos: usize,
    /// The local part of `xsi:type` and where the attribute is.
    pub(super) xsi_type: Option<(String, usize)>,
    /// Where an `xsi:nil="true"` is.
    pub(super) nil: Option<usize>,
    pub(super) children: Vec<Element>,
    pub(super) text: String,
    /// Where the first text that is not whitespace starts.
    pub(super) text_pos: Option<usize>,
}

impl Element {
    /// Whether the element holds text that is not whitespace.
    pub(super) fn has_text(&self) -> bool {
        self.text_pos.is_some()
    }

    /// A new element from its start tag's name and position, with nothing in it yet.
    fn new(name: String, pos: usize) -> Self {
        Element { name, pos, xsi_type: None, nil: None, children: Vec::new(), text: String::new(), text_pos: None }
    }
}

/// A ChorSpec or Choreography XML document being read: its text, the path shown for it in
/// diagnostics, and every problem found so far, each located at a byte offset of the text
/// turned into file:line:column. Reading goes on after a problem (all of them are reported);
/// [`Document::finish`] gives the result or the problems.
#[derive(Debug)]
pub struct Document<'a> {
    pub(super) text: &'a str,
    pub(super) file: PathBuf,
    pub(super) errors: Vec<Diagnostic>,
}

/// Malformed XML, which ends the reading: where (a byte offset), what and what to do.
struct Fatal {
    at: usize,
    message: String,
    hint: &'static str,
}

impl Fatal {
    fn new(at: usize, message: impl Into<String>, hint: &'static str) -> Self {
        Fatal { at, message: message.into(), hint }
    }
}

/// The elements open while the tree is built, and the root once it is closed.
#[derive(Default)]
struct Open {
    stack: Vec<Element>,
    root: Option<Element>,
}

impl Open {
    /// Adds a finished element to its parent, or makes it the root.
    fn attach(&mut self, element: Element) {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(element),
            None => self.root = Some(element),
        }
    }

    /// Appends text to the open element; false when there is none and the text is not
    /// whitespace.
    fn add_text(&mut self, content: &str, at: usize) -> bool {
        let blank = content.chars().all(is_xml_space);
        match self.stack.last_mut() {
            Some(open) => {
                if !blank && open.text_pos.is_none() {
                    open.text_pos = Some(at);
                }
                open.text.push_str(content);
                true
            }
            None => blank,
        }
    }
}

/// XML's whitespace (other space characters are text).
pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl<'a> Document<'a> {
    /// A document to read: `text` is the XML, `file` the path diagnostics show for it.
    pub fn new(text: &'a str, file: &Path) -> Self {
        Document { text, file: file.to_path_buf(), errors: Vec::new() }
    }

    /// The file the document was read from, as diagnostics show it.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// `value` when no problem was found.
    ///
    /// # Errors
    /// Every problem found, in the order found.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<Diagnostic>> {
        if self.errors.is_empty() { Ok(value) } else { Err(self.errors) }
    }

    /// Every problem found so far, the document given up.
    pub fn into_errors(self) -> Vec<Diagnostic> {
        self.errors
    }

    /// Line and column (1-based, columns in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { file: self.file.clone(), line, column }
    }

    /// Records a problem located at the byte offset `offset` of the text.
    pub fn push(&mut self, offset: usize, diagnostic: Diagnostic) {
        let located = diagnostic.at(Some(self.location(offset)));
        self.errors.push(located);
    }

    /// Records a problem of the document as a whole (no line), naming its file.
    pub fn push_unlocated(&mut self, diagnostic: Diagnostic) {
        let in_file = diagnostic.in_file(&self.file);
        self.errors.push(in_file);
    }

    /// How many problems were found so far: a mark for [`Document::tag_service`].
    pub fn mark(&self) -> usize {
        self.errors.len()
    }

    /// Names the service on every diagnostic found since `mark` that names none yet.
    pub fn tag_service(&mut self, mark: usize, name: &str) {
        if name.is_empty() {
            return;
        }
        for d in &mut self.errors[mark..] {
            if d.service.is_none() {
                d.service = Some(name.to_string());
            }
        }
    }

    /// Offset of a slice of the document (attribute names borrow from it).
    fn offset_of(&self, part: &[u8], fallback: usize) -> usize {
        let base = self.text.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if at >= base && at <= base + self.text.len() { at - base } else { fallback }
    }

    /// Parses the whole document into a tree. Malformed XML is fatal (one diagnostic, at the
    /// first error, returned with every problem found before it); attribute problems are
    /// collected and the tree still built.
    pub(super) fn tree(&mut self) -> Result<Element, Vec<Diagnostic>> {
        match self.build_tree() {
            Ok(root) => Ok(root),
            Err(fatal) => {
                self.push(fatal.at, Diagnostic::new(fatal.message).hint(fatal.hint));
                Err(std::mem::take(&mut self.errors))
            }
        }
    }

    /// [`Self::tree`], event by event.
    fn build_tree(&mut self) -> Result<Element, Fatal> {
        let text = self.text;
        let mut reader = NsReader::from_str(text);
        let mut open = Open::default();
        loop {
            let start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let event = reader.read_event().map_err(|e| {
                let at = usize::try_from(reader.error_position()).unwrap_or(start);
                Fatal::new(at, format!("malformed XML: {e}"), "fix the XML syntax")
            })?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    self.start_tag(&reader, e, start, empty, &mut open)?;
                }
                // quick-xml checks that end tags match their start tags.
                Event::End(_) => {
                    if let Some(done) = open.stack.pop() {
                        open.attach(done);
                    }
                }
                Event::Text(t) => Self::text_event(&t, start, &mut open)?,
                Event::CData(c) => Self::cdata(&c, start, &mut open)?,
                Event::GeneralRef(r) => Self::reference(&r, start, &mut open)?,
                Event::DocType(_) => {
                    return Err(Fatal::new(
                        start,
                        "a DTD (`<!DOCTYPE …>`) is not supported",
                        "remove it: the Enactment Engine's documents have none",
                    ));
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(unclosed) = open.stack.last() {
            return Err(Fatal::new(
                unclosed.pos,
                format!("malformed XML: `<{}>` is never closed", unclosed.name),
                "the document ends before its end tag",
            ));
        }
        open.root.ok_or_else(|| Fatal::new(self.text.len(), "the document has no root element", "is the file empty?"))
    }

    /// A start tag (or an empty element): the element opens, or is added whole.
    fn start_tag(
        &mut self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
        start: usize,
        empty: bool,
        open: &mut Open,
    ) -> Result<(), Fatal> {
        if open.stack.len() >= MAX_DEPTH {
            return Err(Fatal::new(
                start,
                format!("elements are nested deeper than {MAX_DEPTH} levels"),
                "a ChorSpec or Choreography is a few levels deep; this is not one",
            ));
        }
        if open.stack.is_empty() && open.root.is_some() {
            return Err(Fatal::new(
                start,
                "malformed XML: a second root element",
                "an XML document has exactly one root element",
            ));
        }
        let element = self.element(reader, e, start)?;
        if empty {
            open.attach(element);
        } else {
            open.stack.push(element);
        }
        Ok(())
    }

    /// Text between tags, line ends normalized as XML 1.0 says.
    fn text_event(t: &BytesText<'_>, start: usize, open: &mut Open) -> Result<(), Fatal> {
        let raw: &str = t;
        if let Some(nul) = raw.find('\0') {
            return Err(Fatal::new(start + nul, NUL_MESSAGE, NUL_HINT));
        }
        let lead = raw.len() - raw.trim_start_matches(is_xml_space).len();
        let content = t.xml10_content();
        if !open.add_text(&content, start + lead) {
            return Err(Fatal::new(start + lead, "malformed XML: text outside the root element", "remove it"));
        }
        Ok(())
    }

    /// A CDATA section: its text as it is.
    fn cdata(c: &BytesCData<'_>, start: usize, open: &mut Open) -> Result<(), Fatal> {
        if let Some(nul) = c.find('\0') {
            return Err(Fatal::new(start + "<![CDATA[".len() + nul, NUL_MESSAGE, NUL_HINT));
        }
        let content = c.xml10_content();
        if !open.add_text(&content, start) {
            return Err(Fatal::new(start, "malformed XML: CDATA outside the root element", "remove it"));
        }
        Ok(())
    }

    /// A character reference or one of the predefined entities, resolved into the text.
    fn reference(r: &BytesRef<'_>, start: usize, open: &mut Open) -> Result<(), Fatal> {
        let resolved = match r.resolve_char_ref() {
            Ok(Some(c)) => c.to_string(),
            Ok(None) => match quick_xml::escape::resolve_xml_entity(r) {
                Some(s) => s.to_string(),
                None => {
                    return Err(Fatal::new(
                        start,
                        format!("unknown entity `&{};`", &**r),
                        "only the predefined entities (&amp; &lt; &gt; &quot; &apos;) and character references are known",
                    ));
                }
            },
            Err(e) => return Err(Fatal::new(start, format!("malformed XML: {e}"), "fix the reference")),
        };
        if !open.add_text(&resolved, start) {
            return Err(Fatal::new(start, "malformed XML: a reference outside the root element", "remove it"));
        }
        Ok(())
    }

    /// An element from its start tag: attributes are checked here (unknown ones are
    /// collected); an `Err` is malformed XML.
    fn element(&mut self, reader: &NsReader<&[u8]>, e: &BytesStart<'_>, start: usize) -> Result<Element, Fatal> {
        let mut element = Element::new(e.local_name().as_ref().to_string(), start);
        for attr in e.attributes() {
            let attr = attr.map_err(|err| {
                // Positions count from just after the `<`; the message repeats it.
                let (AttrError::ExpectedEq(p)
                | AttrError::ExpectedValue(p)
                | AttrError::UnquotedValue(p)
                | AttrError::ExpectedQuote(p, _)
                | AttrError::Duplicated(p, _)) = err;
                let text = match err {
                    AttrError::Duplicated(..) => "an attribute is given twice".to_string(),
                    _ => {
                        let text = err.to_string();
                        text.split_once(": ").map_or(text.clone(), |(_, m)| m.to_string())
                    }
                };
                Fatal::new(start + 1 + p, format!("malformed XML: {text}"), "fix the XML syntax")
            })?;
            self.attribute(reader, &attr, start, &mut element)?;
        }
        Ok(element)
    }

    /// One attribute of `element`: namespace declarations pass, `xsi:type` and `xsi:nil` are
    /// kept, the schema location hints ignored, anything else is an error.
    fn attribute(
        &mut self,
        reader: &NsReader<&[u8]>,
        attr: &Attribute<'_>,
        start: usize,
        element: &mut Element,
    ) -> Result<(), Fatal> {
        let key = attr.key;
        let at = self.offset_of(key.as_ref().as_bytes(), start);
        let qname = key.as_ref().to_string();
        if key.as_namespace_binding().is_some() {
            return Ok(());
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| {
                Fatal::new(at, format!("malformed XML in attribute `{qname}`: {err}"), "fix the XML syntax")
            })?
            .into_owned();
        let (ns, local) = reader.resolver().resolve_attribute(key);
        match ns {
            ResolveResult::Bound(ns) if ns.as_ref() == XSI => match local.as_ref() {
                "type" => {
                    let type_local = value.rsplit(':').next().unwrap_or_default().trim().to_string();
                    element.xsi_type = Some((type_local, at));
                }
                "nil" => match value.trim() {
                    "true" | "1" => element.nil = Some(at),
                    "false" | "0" => {}
                    other => {
                        self.push(at, Diagnostic::new(format!("`xsi:nil` is `{other}`; expected `true` or `false`")));
                    }
                },
                "schemaLocation" | "noNamespaceSchemaLocation" => {}
                _ => self.push(
                    at,
                    Diagnostic::new(format!("unknown attribute `{qname}` on `<{}>`", element.name))
                        .hint("the XSD declares no attributes; only `xsi:type` and `xsi:nil` are understood"),
                ),
            },
            ResolveResult::Unknown(prefix) => self.push(
                at,
                Diagnostic::new(format!(
                    "attribute `{qname}` uses the namespace prefix `{prefix}`, which is not declared"
                ))
                .hint(format!("declare it, e.g. xmlns:xsi=\"{XSI}\"")),
            ),
            _ => self.push(
                at,
                Diagnostic::new(format!("unknown attribute `{qname}` on `<{}>`", element.name))
                    .hint("the XSD declares no attributes; the fields of a spec are child elements"),
            ),
        }
        Ok(())
    }
}
