//! Policy XML: escaping for what we write, and a canonical form for comparing what API
//! Management gives back (it re-indents, self-closes empty elements and re-escapes), so an
//! unchanged policy is never written again.

/// Escapes text for an attribute value or element content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A C# string literal of `text`, for a value written into a policy expression: nothing in
/// it can end the literal and add code.
pub fn csharp_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A C# verbatim string literal (`@"…"`) of `text`: backslashes kept as they are (a regular
/// expression's), `"` doubled, so nothing in it can end the literal.
pub fn csharp_verbatim(text: &str) -> String {
    format!("@\"{}\"", text.replace('"', "\"\""))
}

/// Whether API Management would read more into `text` than its characters when it stands as
/// a value in a policy: `{{name}}` is replaced by a named value (a secret, perhaps), and a
/// leading `@` makes a policy expression.
pub fn interpreted(text: &str) -> bool {
    text.contains("{{") || text.contains("}}") || text.trim_start().starts_with('@')
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Start(String, Vec<(String, String)>),
    End,
    Text(String),
}

/// The canonical form of an XML document: comments, declarations and whitespace between
/// elements dropped, attributes sorted and uniformly escaped, empty elements self-closed,
/// CDATA as text. Two policies are the same when their canonical forms are equal.
pub fn canonical(xml: &str) -> String {
    let mut tokens = Vec::new();
    let mut rest = xml;
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix("<!--") {
            rest = body.find("-->").map_or("", |i| &body[i + 3..]);
        } else if let Some(body) = rest.strip_prefix("<![CDATA[") {
            let end = body.find("]]>").unwrap_or(body.len());
            push_text(&mut tokens, body[..end].to_string());
            rest = body.get(end + 3..).unwrap_or("");
        } else if let Some(body) = rest.strip_prefix("<?") {
            rest = body.find("?>").map_or("", |i| &body[i + 2..]);
        } else if let Some(body) = rest.strip_prefix("</") {
            tokens.push(Token::End);
            rest = body.find('>').map_or("", |i| &body[i + 1..]);
        } else if let Some(body) = rest.strip_prefix('<') {
            let end = tag_end(body);
            let tag = &body[..end];
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let (name, attributes) = parse_tag(tag);
            tokens.push(Token::Start(name, attributes));
            if empty {
                tokens.push(Token::End);
            }
            rest = body.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            push_text(&mut tokens, unescape(&rest[..end]));
            rest = &rest[end..];
        }
    }
    let mut out = String::new();
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Start(name, attributes) => {
                out.push('<');
                out.push_str(name);
                for (k, v) in attributes {
                    out.push_str(&format!(" {k}=\"{}\"", escape(v)));
                }
                if tokens.get(i + 1) == Some(&Token::End) {
                    out.push_str("/>");
                    i += 1;
                } else {
                    out.push('>');
                    names.push(name.clone());
                }
            }
            Token::End => out.push_str(&format!("</{}>", names.pop().unwrap_or_default())),
            Token::Text(text) => out.push_str(&escape(text)),
        }
        i += 1;
    }
    out
}

fn push_text(tokens: &mut Vec<Token>, text: String) {
    let trimmed = text.trim();
    if !trimmed.is_empty() {
        tokens.push(Token::Text(trimmed.to_string()));
    }
}

/// The index of the `>` closing a tag, skipping any inside quoted attribute values.
fn tag_end(body: &str) -> usize {
    let mut quote = None;
    for (i, c) in body.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('>', None) => return i,
            _ => {}
        }
    }
    body.len()
}

fn parse_tag(tag: &str) -> (String, Vec<(String, String)>) {
    let tag = tag.trim();
    let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
    let name = tag[..name_end].to_string();
    let mut attributes = Vec::new();
    let mut rest = tag[name_end..].trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else { break };
        let value_end = after[1..].find(quote).map_or(after.len(), |i| i + 1);
        attributes.push((key, unescape(&after[1..value_end])));
        rest = after.get(value_end + 1..).unwrap_or("").trim_start();
    }
    attributes.sort();
    (name, attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reformatted_and_re_escaped_policies_are_the_same() {
        let ours = r#"<policies><inbound><base /><set-header name="x" exists-action="override"><value>a &amp; b</value></set-header><choose><when condition="@(context.Request.Headers.GetValueOrDefault(&quot;v&quot;,&quot;&quot;) == &quot;1&quot;)"><set-backend-service backend-id="b1"></set-backend-service></when></choose></inbound></policies>"#;
        let theirs = "<policies>\n\t<inbound>\n\t\t<base />\n\t\t<set-header exists-action=\"override\" name=\"x\">\n\t\t\t<value>a &amp; b</value>\n\t\t</set-header>\n\t\t<choose>\n\t\t\t<when condition='@(context.Request.Headers.GetValueOrDefault(\"v\",\"\") == \"1\")'>\n\t\t\t\t<set-backend-service backend-id=\"b1\" />\n\t\t\t</when>\n\t\t</choose>\n\t</inbound>\n<!-- added by the portal --></policies>";
        assert_eq!(canonical(ours), canonical(theirs));
    }

    #[test]
    fn a_changed_value_is_a_different_policy() {
        let a = r#"<policies><inbound><rate-limit calls="10" renewal-period="1" /></inbound></policies>"#;
        let b = r#"<policies><inbound><rate-limit calls="20" renewal-period="1" /></inbound></policies>"#;
        assert_ne!(canonical(a), canonical(b));
    }

    #[test]
    fn cdata_is_text() {
        assert_eq!(canonical("<a><![CDATA[x < y]]></a>"), canonical("<a>x &lt; y</a>"));
    }
}
