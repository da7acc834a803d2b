//! Narrative XHTML (`Narrative.div`, R4 narrative.html, invariants txt-1 and txt-2): a
//! well-formed `<div xmlns="http://www.w3.org/1999/xhtml">` holding only the basic formatting
//! elements and attributes, images and links, and some content. Front ends render narrative as
//! HTML, so this is also the stored-XSS guard: no scripts, event-handler attributes,
//! `javascript:` URLs, frames, objects, forms or styles that load content.
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// The elements R4 allows in narrative (HTML 4.0 chapters 7–11 and 15 without section 9.4,
/// links and images).
const ELEMENTS: &[&str] = &[
    "a",
    "abbr",
    "acronym",
    "address",
    "b",
    "bdo",
    "big",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "samp",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "tt",
    "ul",
    "var",
];

/// Attributes allowed on every element.
const COMMON: &[&str] = &["id", "class", "style", "title", "lang", "xml:lang", "dir"];

/// Attributes allowed on particular elements.
fn allowed_attr(element: &str, attr: &str) -> bool {
    if COMMON.contains(&attr) {
        return true;
    }
    match element {
        "a" => matches!(attr, "href" | "name" | "rel" | "rev" | "hreflang" | "type"),
        "img" => matches!(attr, "src" | "alt" | "width" | "height" | "longdesc"),
        "td" | "th" => matches!(
            attr,
            "colspan" | "rowspan" | "headers" | "scope" | "abbr" | "axis" | "align" | "valign"
        ),
        "table" => matches!(
            attr,
            "border" | "cellpadding" | "cellspacing" | "summary" | "width" | "frame" | "rules"
        ),
        "col" | "colgroup" => matches!(attr, "span" | "width" | "align" | "valign"),
        "tr" | "thead" | "tbody" | "tfoot" => matches!(attr, "align" | "valign"),
        "blockquote" | "q" | "del" | "ins" => matches!(attr, "cite" | "datetime"),
        "ol" => matches!(attr, "start" | "type"),
        "li" => matches!(attr, "value" | "type"),
        _ => false,
    }
}

/// A URL a link or image may carry: no script or markup-bearing schemes.
fn safe_url(v: &str) -> bool {
    let t: String = v
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    !(t.starts_with("javascript:")
        || t.starts_with("vbscript:")
        || t.starts_with("livescript:")
        || (t.starts_with("data:") && !t.starts_with("data:image/")))
}

/// A style attribute that only formats: nothing that loads content or runs script.
fn safe_style(v: &str) -> bool {
    let t = v.to_ascii_lowercase().replace(char::is_whitespace, "");
    ![
        "url(",
        "expression(",
        "@import",
        "behavior:",
        "-moz-binding",
        "javascript:",
        "\\",
    ]
    .iter()
    .any(|bad| t.contains(bad))
}

fn name_of(e: &BytesStart) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

fn check_element(e: &BytesStart, root: bool) -> Result<(), String> {
    let name = name_of(e);
    if !ELEMENTS.contains(&name.as_str()) {
        return Err(format!(
            "element <{name}> is not allowed in narrative (txt-1: basic HTML formatting only)"
        ));
    }
    let mut has_ns = false;
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|err| format!("malformed attribute in <{name}>: {err}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| format!("malformed value of {key} in <{name}>: {err}"))?;
        if key == "xmlns" {
            if value != XHTML_NS {
                return Err(format!(
                    "<{name}> declares namespace '{value}'; narrative is XHTML ({XHTML_NS})"
                ));
            }
            has_ns = true;
            continue;
        }
        if key.starts_with("on") {
            return Err(format!(
                "event-handler attribute {key} is not allowed in narrative (txt-1)"
            ));
        }
        if !allowed_attr(&name, &key) {
            return Err(format!(
                "attribute {key} is not allowed on <{name}> in narrative (txt-1)"
            ));
        }
        if matches!(key.as_str(), "href" | "src" | "longdesc" | "cite") && !safe_url(&value) {
            return Err(format!(
                "<{name} {key}> holds a script or markup URL, which narrative may not (txt-1)"
            ));
        }
        if key == "style" && !safe_style(&value) {
            return Err(format!(
                "the style of <{name}> loads content or runs script, which narrative may not (txt-1)"
            ));
        }
    }
    if root {
        if name != "div" {
            return Err(format!("narrative must be a <div>, not <{name}>"));
        }
        if !has_ns {
            return Err(format!(
                "the narrative <div> must declare xmlns=\"{XHTML_NS}\""
            ));
        }
    }
    Ok(())
}

/// Check a `Narrative.div` value; the error says what is wrong.
pub fn check(div: &str) -> Result<(), String> {
    let mut reader = Reader::from_str(div);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut content = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("narrative is not well-formed XHTML: {e}"))?;
        match ev {
            Event::Start(e) | Event::Empty(e) if depth == 0 && roots > 0 => {
                return Err(format!(
                    "narrative has a second top-level element <{}>",
                    name_of(&e)
                ))
            }
            Event::Start(e) => {
                check_element(&e, depth == 0)?;
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Event::Empty(e) => {
                check_element(&e, depth == 0)?;
                roots += usize::from(depth == 0);
                content |= name_of(&e) == "img";
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) => {
                let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                if depth == 0 && !raw.trim().is_empty() {
                    return Err("narrative has text outside its <div>".into());
                }
                content |= !raw.trim().is_empty();
            }
            Event::CData(t) => {
                if depth == 0 {
                    return Err("narrative has content outside its <div>".into());
                }
                content |= !String::from_utf8_lossy(t.as_ref()).trim().is_empty();
            }
            Event::Comment(_) => {}
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                return Err(
                    "narrative may not carry an XML declaration, processing instruction or DOCTYPE"
                        .into(),
                )
            }
            Event::Eof => break,
        }
    }
    if roots == 0 {
        return Err("narrative must be a <div> element".into());
    }
    if depth != 0 {
        return Err("narrative is not well-formed XHTML: an element is not closed".into());
    }
    if !content {
        return Err("narrative has no content (txt-2: some non-whitespace content)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    fn div(inner: &str) -> String {
        format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{inner}</div>")
    }

    #[test]
    fn accepts_formatting_links_images_tables() {
        for ok in [
            div("Plain text"),
            div("<p>A <b>bold</b> &amp; <i>italic</i> &quot;note&quot;</p>"),
            div("<a href=\"https://example.org/x?a=1&amp;b=2\">link</a>"),
            div("<img src=\"#pic\" alt=\"chart\"/>"),
            div("<table border=\"1\"><tbody><tr><td colspan=\"2\" valign=\"top\">x</td></tr></tbody></table>"),
            div("<span style=\"color: red; font-weight: bold\">warn</span>"),
            div("<!-- comment --><ul><li>one</li></ul>"),
            "<div xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><h3>Plan</h3><br/>text</div>".into(),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_script_and_active_content() {
        for (bad, why) in [
            (div("<script>alert(1)</script>"), "<script>"),
            (div("<p onclick=\"alert(1)\">x</p>"), "onclick"),
            (div("<img src=\"x\" onerror=\"alert(1)\"/>"), "onerror"),
            (
                div("<a href=\"javascript:alert(1)\">x</a>"),
                "script or markup URL",
            ),
            (
                div("<a href=\" JaVaScRiPt:alert(1)\">x</a>"),
                "script or markup URL",
            ),
            (
                div("<a href=\"data:text/html;base64,PHNjcmlwdD4=\">x</a>"),
                "script or markup URL",
            ),
            (div("<iframe src=\"https://evil\"></iframe>"), "<iframe>"),
            (div("<object data=\"x\"></object>"), "<object>"),
            (div("<form><input/></form>"), "<form>"),
            (div("<style>p{}</style>"), "<style>"),
            (
                div("<span style=\"background: url(https://evil/x.png)\">x</span>"),
                "style",
            ),
            (
                div("<span style=\"width: expression(alert(1))\">x</span>"),
                "style",
            ),
            (div("<svg><script/></svg>"), "<svg>"),
            (
                div("<p xmlns=\"http://www.w3.org/2000/svg\">x</p>"),
                "namespace",
            ),
        ] {
            let e = check(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_malformed_or_empty() {
        for (bad, why) in [
            ("<div>no namespace</div>".to_string(), "xmlns"),
            (
                "<p xmlns=\"http://www.w3.org/1999/xhtml\">x</p>".into(),
                "must be a <div>",
            ),
            (div("<p>unclosed"), "well-formed"),
            (div("<b><i>x</b></i>"), "well-formed"),
            (div("   "), "txt-2"),
            (div("<p> </p>"), "txt-2"),
            (format!("{}{}", div("a"), div("b")), "second top-level"),
            (format!("{} trailing", div("a")), "outside"),
            ("plain text".into(), "<div>"),
            (
                "<?xml version=\"1.0\"?>".to_string() + &div("x"),
                "declaration",
            ),
        ] {
            let e = check(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
