//! Domain layer: untrusted text made safe to print on a terminal (`authd audit`, `authd users`,
//! every error line, the server's pretty log). A login email, a name, a User-Agent or a
//! config value may hold ESC sequences, a carriage return or a bidi override: printed as they
//! came, they would rewrite the operator's screen, forge table rows, or reorder what is read.
//!
//! Every such character is shown escaped, and so is a backslash, so that the escaped form of a
//! character can never be forged by sending its text:
//!
//! | what | shown as |
//! |---|---|
//! | `\` | `\\` |
//! | tab, LF, CR | `\t`, `\n`, `\r` |
//! | other C0 controls (U+0000..U+001F), DEL (U+007F) | `\x1b`, `\x07`, `\x7f`, ... |
//! | C1 controls (U+0080..U+009F, e.g. the 8-bit CSI U+009B) | `\u{9b}` |
//! | format characters (Unicode category Cf: bidi embeddings, overrides and isolates U+202A..U+202E and U+2066..U+2069, LRM/RLM, zero-width characters, BOM, tags, ...), the line and paragraph separators U+2028/U+2029, and the invisible Hangul fillers | `\u{202e}`, ... |
//!
//! Everything else (letters of any script, emoji, spaces) is printed as it is. JSON output
//! (`--json`) is not shaped here: it carries the exact value, escaped by JSON's own rules.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Unicode's format characters (general category Cf, Unicode 15.1), as inclusive ranges.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` may not reach a terminal as it is: a C0 or C1 control, DEL, a format
/// character (bidi controls, zero-width characters, ...), a line or paragraph separator, or
/// an invisible filler letter.
pub fn is_unsafe(c: char) -> bool {
    let u = c as u32;
    u < 0x20
        || (0x7F..=0x9F).contains(&u)
        || matches!(u, 0x2028 | 0x2029 | 0x115F | 0x1160 | 0x3164 | 0xFFA0)
        || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Writes `c` escaped: `\\`, `\t`, `\n`, `\r`, `\xNN` (other ASCII controls) or `\u{N}`.
fn write_escaped(out: &mut impl Write, c: char) -> fmt::Result {
    match c {
        '\\' => out.write_str("\\\\"),
        '\t' => out.write_str("\\t"),
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        c if c.is_ascii() => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// `text` as a terminal may show it (see the module's table); borrowed when nothing needs
/// escaping.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c == '\\' || is_unsafe(c))
}

/// For text that has its own escaping already (a log line whose string fields `tracing`
/// quotes with backslash escapes): only the characters of `is_unsafe` are escaped, a
/// backslash is left as it is (escaping it would double every escape of the line's own).
pub fn escape_unsafe(text: &str) -> Cow<'_, str> {
    escape_where(text, is_unsafe)
}

fn escape_where(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Untrusted text in a `format!`: displays as `escape(text)`, honouring width and alignment
/// (`{:<30}`), so table columns stay in place.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

/// `Shown` of an optional value, `-` when absent.
pub fn or_dash(value: Option<&str>) -> Shown<'_> {
    Shown(value.unwrap_or("-"))
}

/// `value` as one line of compact JSON for a terminal: the JSON of `serde_json`, except that
/// the characters of `is_unsafe` that it leaves raw inside strings (C1 controls, bidi
/// overrides, zero-width characters) are written as `\uXXXX` escapes. The same JSON value,
/// but nothing in it can rewrite the terminal or reorder what a reader sees.
pub fn json_line(value: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    if !text.chars().any(is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A table for a terminal: a header row, then one row per entry, each column as wide as its
/// widest cell (counted in characters) plus two spaces; the last column is not padded. Cells
/// are shown escaped (`escape`), so what a client sent cannot move a column or forge a row.
/// Returns the lines, each ending in `\n`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let shown: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &shown {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                let pad = widths[i] - c.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for r in &shown {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_serde_json_leaves_raw_and_keep_the_value() {
        let raw = "a\u{9b}2J\u{202e}b\u{e0041}\x1b";
        let line = json_line(&serde_json::json!({ "k": raw }));
        assert!(!line.chars().any(is_unsafe), "{line}");
        assert!(
            line.contains("\\u009b") && line.contains("\\u202e"),
            "{line}"
        );
        assert!(line.contains("\\udb40\\udc41"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["k"], raw);
    }

    #[test]
    fn tables_align_every_column_to_its_widest_cell_and_escape_cells() {
        let rows = vec![
            vec![
                "a".to_string(),
                "a much longer reason".to_string(),
                "x".to_string(),
            ],
            vec![
                "bbbb".to_string(),
                "r\n".to_string(),
                "last\x1b".to_string(),
            ],
        ];
        let t = table(&["ONE", "REASON", "END"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        // The third column starts at the same character in every line.
        let col = "ONE   REASON                ".len();
        assert_eq!(&lines[0][col..], "END");
        assert_eq!(&lines[1][col..], "x");
        assert_eq!(&lines[2][col..], "last\\x1b");
        assert!(lines[2].contains("r\\n"), "{t}");
    }

    #[test]
    fn controls_bidi_and_invisibles_are_escaped() {
        for (raw, shown) in [
            ("\x1b[2J", "\\x1b[2J"),
            ("a\x07b", "a\\x07b"),
            ("line\r\nforged", "line\\r\\nforged"),
            ("\t\0\x7f", "\\t\\x00\\x7f"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("\u{85}", "\\u{85}"),
            ("evil\u{202e}moc.x", "evil\\u{202e}moc.x"),
            ("\u{2066}\u{2069}", "\\u{2066}\\u{2069}"),
            ("ad\u{200b}min", "ad\\u{200b}min"),
            ("\u{feff}\u{2028}", "\\u{feff}\\u{2028}"),
            ("\u{e0041}", "\\u{e0041}"),
            ("\u{3164}", "\\u{3164}"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn a_backslash_is_escaped_so_an_escape_cannot_be_forged() {
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        assert_ne!(escape("\\x1b"), escape("\x1b"));
        assert_eq!(escape("C:\\"), "C:\\\\");
    }

    #[test]
    fn escape_unsafe_leaves_backslashes_alone() {
        assert_eq!(
            escape_unsafe("a=\"\\\"\" \x1b\u{202e}\r"),
            "a=\"\\\"\" \\x1b\\u{202e}\\r"
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_untouched() {
        for text in [
            "alice@example.com",
            "Zoë Ångström",
            "名前 😀",
            "a b-c_d.e",
            "",
        ] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn shown_keeps_column_widths() {
        assert_eq!(format!("[{:<6}]", Shown("\x1b")), "[\\x1b  ]");
        assert_eq!(format!("[{:<3}]", or_dash(None)), "[-  ]");
    }

    #[test]
    fn every_escaped_char_leaves_no_unsafe_char() {
        for u in (0..0x11_0000u32).filter_map(char::from_u32) {
            let s = u.to_string();
            let out = escape(&s);
            assert!(!out.chars().any(is_unsafe), "U+{:04X}", u as u32);
        }
    }
}
