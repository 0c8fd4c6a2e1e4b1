//! Client-supplied strings made safe to log: escaped and truncated.
//!
//! A `client_id` of `%0aFORGED` would otherwise write a raw newline into the
//! log and forge a line; `%1b[31m` would colour the operator's terminal; a
//! 60 KB `Origin` would become a 60 KB line. Every client-supplied string that
//! reaches a log goes through [`escape`] (or [`escape_bytes`] for a header
//! value that may not be UTF-8), so there is one rule to review:
//!
//! - control characters (C0, DEL, C1), line and paragraph separators and the
//!   bidirectional overrides are written as `\n`, `\t`, `\u{1b}`, …, and a
//!   backslash as `\\`, so an escaped value can be told from a raw one;
//! - bytes that are not UTF-8 are written as `\xNN`;
//! - at most [`MAX_LOGGED`] bytes of the value are written, followed by
//!   `…(+N bytes)` naming what was cut.
//!
//! What is never logged at all: request URIs and query strings (a
//! `?token=` of token mode is a credential), `Authorization` headers, and
//! the tokens of `refresh` messages; a refused token is logged by its cause
//! only (`invalid token`, ...). `tests/auth.rs` checks it on the log of a
//! real server.
//!
//! ```ignore
//! tracing::info!(client_id = %logsafe::escape(&id), "connect");
//! ```

use std::fmt;

/// Bytes of a client-supplied value written to the log at most.
pub const MAX_LOGGED: usize = 128;

/// `text`, escaped and truncated when displayed.
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped(text.as_bytes())
}

/// `bytes` (a header value, maybe not UTF-8), escaped and truncated when displayed.
pub fn escape_bytes(bytes: &[u8]) -> Escaped<'_> {
    Escaped(bytes)
}

/// A client-supplied value that displays escaped and truncated (see the module docs).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut budget = MAX_LOGGED;
        let mut used = 0;
        'chunks: for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                let len = c.len_utf8();
                if len > budget {
                    break 'chunks;
                }
                budget -= len;
                used += len;
                write_char(f, c)?;
            }
            for byte in chunk.invalid() {
                if budget == 0 {
                    break 'chunks;
                }
                budget -= 1;
                used += 1;
                write!(f, "\\x{byte:02x}")?;
            }
        }
        if used < self.0.len() {
            write!(f, "…(+{} bytes)", self.0.len() - used)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '"' => f.write_str("\\\""),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        // C0, DEL, C1, line/paragraph separators, bidirectional controls.
        c if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c) =>
        {
            write!(f, "\\u{{{:x}}}", u32::from(c))
        }
        c => fmt::Write::write_char(f, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape("a\nFORGED\u{1b}[31m\r\t\u{7f}\u{85}\u{202e}\\\"").to_string(),
            "a\\nFORGED\\u{1b}[31m\\r\\t\\u{7f}\\u{85}\\u{202e}\\\\\\\""
        );
        assert_eq!(escape("plain id-42 é ✓").to_string(), "plain id-42 é ✓");
        assert_eq!(escape("").to_string(), "");
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "x".repeat(60_000);
        let shown = escape(&long).to_string();
        assert_eq!(
            shown,
            format!("{}…(+{} bytes)", "x".repeat(128), 60_000 - 128)
        );
        // 127 ASCII bytes then a 2-byte character: the character does not fit.
        let edge = format!("{}é", "y".repeat(127));
        assert_eq!(
            escape(&edge).to_string(),
            format!("{}…(+2 bytes)", "y".repeat(127))
        );
        let exact = "z".repeat(MAX_LOGGED);
        assert_eq!(escape(&exact).to_string(), exact);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_in_hex() {
        assert_eq!(escape_bytes(b"ok\xff\xfe!").to_string(), "ok\\xff\\xfe!");
        assert_eq!(format!("{:?}", escape("a\"b")), "\"a\\\"b\"");
    }
}
