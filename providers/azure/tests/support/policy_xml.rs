//! Policy documents as API Management keeps them: parsed when they are stored, and
//! re-serialised when they are read, so that what comes back is not the text that was sent.
//!
//! The fake stores the document tree (element names, attributes with their decoded values,
//! text, comments, CDATA sections) and writes it out the way a DOM serialiser does, as the real
//! service does:
//!
//! - one element per line, indented with tabs, lines ended with `\r\n`; whitespace between
//!   elements is not kept (an element with only text keeps it as it is, on its line);
//! - an empty element is self-closed with a space: `<base></base>` → `<base />`;
//! - attributes in double quotes, in the order they were given; `&`, `<`, `>` and `"` in
//!   attribute values escaped as `&amp;` `&lt;` `&gt;` `&quot;` (so `'a"b'` → `"a&quot;b"`);
//!   `&`, `<`, `>` escaped in text; character references (`&#65;`) and `&apos;` decoded;
//! - the XML declaration dropped; comments and CDATA sections kept.
//!
//! Two formats, as the service has them (`format` of the policy contract):
//!
//! - `xml`: the value is an XML document; it must be well-formed (`&`, `<` escaped).
//! - `rawxml`: policy expressions (`@(…)` and `@{…}`, in attribute values and in text) may
//!   hold raw `"`, `<`, `&`: they are read as C# (balanced brackets, string and char literals)
//!   and given back as they are when read in `rawxml`; read in `xml`, they are escaped.
//!
//! The checks the service makes on the structure: the root is `<policies>`, whose elements are
//! among `inbound`, `backend`, `outbound`, `on-error`, each at most once.

use std::fmt::Write as _;

/// The sections `<policies>` may hold.
pub const SECTIONS: [&str; 4] = ["inbound", "backend", "outbound", "on-error"];

/// A node of a policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    /// Text with the entity and character references decoded; `expression` when it is a
    /// policy expression read from `rawxml` (given back raw in `rawxml`).
    Text {
        text: String,
        expression: bool,
    },
    Comment(String),
    CData(String),
}

/// An element: name, attributes (name, decoded value, whether it is a raw policy expression),
/// children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: String,
    pub expression: bool,
}

/// The two inline formats of a policy value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    RawXml,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Xml => "xml",
            Format::RawXml => "rawxml",
        }
    }
}

/// Parses a policy document and checks its structure (see the module docs). The error is a
/// message as the service words a validation error.
pub fn parse_policy(text: &str, format: Format) -> Result<Element, String> {
    let root = parse(text, format)?;
    if root.name != "policies" {
        return Err(format!("Policy document must have <policies> as its root element, not <{}>", root.name));
    }
    let mut seen: Vec<&str> = Vec::new();
    for child in &root.children {
        match child {
            Node::Element(e) => {
                if !SECTIONS.contains(&e.name.as_str()) {
                    return Err(format!(
                        "Element '{}' is not allowed in <policies>: only inbound, backend, outbound, on-error",
                        e.name
                    ));
                }
                if seen.contains(&e.name.as_str()) {
                    return Err(format!("Section '{}' is defined more than once", e.name));
                }
                seen.push(&e.name);
            }
            Node::Text { text, .. } if !text.trim().is_empty() => {
                return Err("Text is not allowed directly in <policies>".to_owned());
            }
            _ => {}
        }
    }
    Ok(root)
}

/// Parses one XML element (the document's root), with an optional XML declaration, comments
/// and whitespace around it.
pub fn parse(text: &str, format: Format) -> Result<Element, String> {
    let mut p = Parser {
        s: text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes(),
        i: 0,
        raw: format == Format::RawXml,
    };
    p.skip_misc()?;
    if p.s[p.i..].starts_with(b"<!DOCTYPE") {
        return Err(p.error("a DOCTYPE is not allowed"));
    }
    if !p.peek_is(b'<') {
        return Err(p.error("expected the root element"));
    }
    let root = p.element()?;
    p.skip_misc()?;
    if p.i < p.s.len() {
        return Err(p.error("unexpected content after the root element"));
    }
    Ok(root)
}

/// Writes the element as the service gives it back (see the module docs).
pub fn serialize(root: &Element, format: Format) -> String {
    let mut out = String::new();
    write_element(&mut out, root, 0, format);
    out
}

/// Whether a value is a policy expression (`@(…)` or `@{…}`).
pub fn is_expression(value: &str) -> bool {
    let v = value.trim_start();
    v.starts_with("@(") || v.starts_with("@{")
}

fn write_element(out: &mut String, e: &Element, depth: usize, format: Format) {
    out.push('<');
    out.push_str(&e.name);
    for a in &e.attributes {
        let _ = write!(out, " {}=\"", a.name);
        if a.expression && format == Format::RawXml {
            out.push_str(&a.value);
        } else {
            escape(out, &a.value, true);
        }
        out.push('"');
    }
    let children: Vec<&Node> = e
        .children
        .iter()
        .filter(|n| !matches!(n, Node::Text { text, .. } if text.trim().is_empty()))
        .collect();
    if children.is_empty() {
        // Whitespace-only content goes too: `<a> </a>` → `<a />`, as the service has it.
        out.push_str(" />");
        return;
    }
    out.push('>');
    let has_text = children.iter().any(|n| matches!(n, Node::Text { .. } | Node::CData(_)));
    if has_text {
        // Text (or mixed) content: written as it is, on the element's line.
        for child in &e.children {
            write_node(out, child, depth, format, false);
        }
    } else {
        for child in children {
            out.push_str("\r\n");
            indent(out, depth + 1);
            write_node(out, child, depth + 1, format, true);
        }
        out.push_str("\r\n");
        indent(out, depth);
    }
    let _ = write!(out, "</{}>", e.name);
}

fn write_node(out: &mut String, node: &Node, depth: usize, format: Format, indented: bool) {
    match node {
        Node::Element(e) => {
            if indented {
                write_element(out, e, depth, format);
            } else {
                // Inside text content: no indentation below this point either.
                let mut inner = String::new();
                write_element(&mut inner, e, 0, format);
                out.push_str(&inner.replace("\r\n", "").replace('\t', ""));
            }
        }
        Node::Text { text, expression } => {
            if *expression && format == Format::RawXml {
                out.push_str(text);
            } else {
                escape(out, text, false);
            }
        }
        Node::Comment(c) => {
            let _ = write!(out, "<!--{c}-->");
        }
        Node::CData(c) => {
            let _ = write!(out, "<![CDATA[{c}]]>");
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push('\t');
    }
}

fn escape(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    raw: bool,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        let line = self.s[..self.i.min(self.s.len())].iter().filter(|&&b| b == b'\n').count() + 1;
        let start = self.s[..self.i.min(self.s.len())].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        format!(
            "'{}' is not a valid policy document: {what} (line {line}, position {})",
            self.kind(),
            self.i - start + 1
        )
    }

    fn kind(&self) -> &'static str {
        if self.raw {
            "rawxml"
        } else {
            "xml"
        }
    }

    fn peek_is(&self, b: u8) -> bool {
        self.s.get(self.i) == Some(&b)
    }

    fn starts(&self, prefix: &[u8]) -> bool {
        self.s[self.i..].starts_with(prefix)
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    /// Whitespace, comments, processing instructions (the XML declaration) outside the root.
    fn skip_misc(&mut self) -> Result<(), String> {
        loop {
            self.skip_ws();
            if self.starts(b"<?") {
                self.until(b"?>", "an unterminated processing instruction")?;
            } else if self.starts(b"<!--") {
                self.i += 4;
                self.until(b"-->", "an unterminated comment")?;
            } else {
                return Ok(());
            }
        }
    }

    /// Advances past the next `end`; returns what was before it.
    fn until(&mut self, end: &[u8], what: &str) -> Result<String, String> {
        let start = self.i;
        match self.s[self.i..].windows(end.len()).position(|w| w == end) {
            Some(p) => {
                self.i += p + end.len();
                Ok(String::from_utf8_lossy(&self.s[start..start + p]).into_owned())
            }
            None => {
                self.i = self.s.len();
                Err(self.error(what))
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        while self.i < self.s.len() {
            let b = self.s[self.i];
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':') || b >= 0x80 {
                self.i += 1;
            } else {
                break;
            }
        }
        if start == self.i || self.s[start].is_ascii_digit() || matches!(self.s[start], b'-' | b'.') {
            return Err(self.error("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn element(&mut self) -> Result<Element, String> {
        self.i += 1; // '<'
        let name = self.name()?;
        let mut attributes: Vec<Attribute> = Vec::new();
        loop {
            let before = self.i;
            self.skip_ws();
            if self.starts(b"/>") {
                self.i += 2;
                return Ok(Element { name, attributes, children: Vec::new() });
            }
            if self.peek_is(b'>') {
                self.i += 1;
                break;
            }
            if self.i == before {
                return Err(
                    self.error("expected whitespace, '>' or '/>' after the element name or an attribute")
                );
            }
            let attr = self.name()?;
            self.skip_ws();
            if !self.peek_is(b'=') {
                return Err(self.error(&format!("expected '=' after the attribute '{attr}'")));
            }
            self.i += 1;
            self.skip_ws();
            let quote = match self.s.get(self.i) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => return Err(self.error(&format!("the value of the attribute '{attr}' is not quoted"))),
            };
            self.i += 1;
            let (value, expression) = self.attribute_value(quote)?;
            if attributes.iter().any(|a| a.name == attr) {
                return Err(self.error(&format!("the attribute '{attr}' is given twice")));
            }
            attributes.push(Attribute { name: attr, value, expression });
        }
        let mut children = Vec::new();
        loop {
            if self.i >= self.s.len() {
                return Err(self.error(&format!("the element '{name}' is not closed")));
            }
            if self.starts(b"</") {
                self.i += 2;
                let end = self.name()?;
                if end != name {
                    return Err(
                        self.error(&format!("the '{name}' start tag does not match the end tag of '{end}'"))
                    );
                }
                self.skip_ws();
                if !self.peek_is(b'>') {
                    return Err(self.error("expected '>'"));
                }
                self.i += 1;
                return Ok(Element { name, attributes, children });
            } else if self.starts(b"<!--") {
                self.i += 4;
                let c = self.until(b"-->", "an unterminated comment")?;
                children.push(Node::Comment(c));
            } else if self.starts(b"<![CDATA[") {
                self.i += 9;
                let c = self.until(b"]]>", "an unterminated CDATA section")?;
                children.push(Node::CData(c));
            } else if self.starts(b"<?") {
                self.until(b"?>", "an unterminated processing instruction")?;
            } else if self.peek_is(b'<') {
                children.push(Node::Element(self.element()?));
            } else {
                let node = self.text()?;
                // Adjacent text nodes (around a skipped processing instruction) join.
                if let (
                    Some(Node::Text { text: prev, expression: false }),
                    Node::Text { text, expression: false },
                ) = (children.last_mut(), &node)
                {
                    prev.push_str(text);
                } else {
                    children.push(node);
                }
            }
        }
    }

    /// An attribute value up to `quote` (consumed); in `rawxml`, a policy expression is read
    /// as C# and kept raw.
    fn attribute_value(&mut self, quote: u8) -> Result<(String, bool), String> {
        if self.raw && (self.starts(b"@(") || self.starts(b"@{")) {
            let start = self.i;
            self.i += 1;
            self.expression()?;
            // Anything after the expression up to the quote belongs to the value too.
            while self.i < self.s.len() && self.s[self.i] != quote {
                self.i += 1;
            }
            if self.i >= self.s.len() {
                return Err(self.error("an unterminated attribute value"));
            }
            let value = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            self.i += 1;
            return Ok((value, true));
        }
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != quote {
            if self.s[self.i] == b'<' && !self.raw {
                return Err(self.error("'<' is not allowed in an attribute value"));
            }
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err(self.error("an unterminated attribute value"));
        }
        let raw = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        let value = self.decode(&raw)?;
        Ok((value, false))
    }

    /// Text up to the next `<` (in `rawxml`, a policy expression may hold `<`).
    fn text(&mut self) -> Result<Node, String> {
        let start = self.i;
        let lead = self.s[self.i..].iter().take_while(|b| b.is_ascii_whitespace()).count();
        if self.raw
            && (self.s[self.i + lead..].starts_with(b"@(") || self.s[self.i + lead..].starts_with(b"@{"))
        {
            self.i += lead + 1;
            self.expression()?;
            while self.i < self.s.len() && self.s[self.i] != b'<' {
                self.i += 1;
            }
            let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            return Ok(Node::Text { text, expression: true });
        }
        while self.i < self.s.len() && self.s[self.i] != b'<' {
            self.i += 1;
        }
        let raw = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(Node::Text { text: self.decode(&raw)?, expression: false })
    }

    /// A balanced `(…)` or `{…}` starting at the current byte, with C# string, verbatim
    /// string and char literals; leaves `i` after the closing bracket.
    fn expression(&mut self) -> Result<(), String> {
        let mut stack: Vec<u8> = Vec::new();
        while self.i < self.s.len() {
            let b = self.s[self.i];
            match b {
                b'(' | b'{' | b'[' => stack.push(b),
                b')' | b'}' | b']' => {
                    let open = match b {
                        b')' => b'(',
                        b'}' => b'{',
                        _ => b'[',
                    };
                    if stack.pop() != Some(open) {
                        return Err(self.error("unbalanced brackets in a policy expression"));
                    }
                    if stack.is_empty() {
                        self.i += 1;
                        return Ok(());
                    }
                }
                b'@' if self.s.get(self.i + 1) == Some(&b'"') => {
                    // Verbatim string: "" is a quote.
                    self.i += 2;
                    loop {
                        match self.s.get(self.i) {
                            None => return Err(self.error("an unterminated string in a policy expression")),
                            Some(b'"') if self.s.get(self.i + 1) == Some(&b'"') => self.i += 2,
                            Some(b'"') => break,
                            Some(_) => self.i += 1,
                        }
                    }
                }
                b'"' | b'\'' => {
                    self.i += 1;
                    loop {
                        match self.s.get(self.i) {
                            None => return Err(self.error("an unterminated literal in a policy expression")),
                            Some(b'\\') => self.i += 2,
                            Some(&c) if c == b => break,
                            Some(_) => self.i += 1,
                        }
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        Err(self.error("an unterminated policy expression"))
    }

    /// Decodes entity and character references; in `rawxml` a stray `&` stays as it is.
    fn decode(&self, raw: &str) -> Result<String, String> {
        if !raw.contains('&') {
            return Ok(raw.to_owned());
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(p) = rest.find('&') {
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            let decoded = rest.find(';').filter(|&e| e <= 12).and_then(|e| {
                let entity = &rest[1..e];
                let c = match entity {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => {
                        if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                            u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                        } else if let Some(dec) = entity.strip_prefix('#') {
                            dec.parse::<u32>().ok().and_then(char::from_u32)
                        } else {
                            None
                        }
                    }
                };
                c.map(|c| (c, e + 1))
            });
            match decoded {
                Some((c, len)) => {
                    out.push(c);
                    rest = &rest[len..];
                }
                None if self.raw => {
                    out.push('&');
                    rest = &rest[1..];
                }
                None => {
                    let shown: String = rest.chars().take(12).collect();
                    return Err(format!(
                        "'xml' is not a valid policy document: an '&' that starts no entity reference near {shown:?} (escape it as &amp;, or use the rawxml format)"
                    ));
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}
