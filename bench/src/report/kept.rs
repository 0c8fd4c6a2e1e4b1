//! Sections of `docs/BENCHMARKS.md` kept between `<!-- kept:NAME -->` and
//! `<!-- /kept:NAME -->`: each run that owns one replaces it in place, and
//! `bench run`, which rewrites the rest of the file, carries every one over
//! (hand-written findings too).

use std::path::Path;

use anyhow::Result;

/// The block from `begin` to `end` of an existing BENCHMARKS.md, if it has one.
pub fn kept_block<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = text.find(begin)?;
    let stop = text[start..].find(end)? + start + end.len();
    Some(&text[start..stop])
}

/// Every kept block of an existing BENCHMARKS.md, in order.
pub fn kept(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!-- kept:") {
        let after = &rest[start + "<!-- kept:".len()..];
        let Some(name) = after.split_once(" -->").map(|(name, _)| name) else {
            break;
        };
        let end_marker = format!("<!-- /kept:{name} -->");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let end = start + end + end_marker.len();
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    blocks
}

/// Replaces (or appends) the kept block between `begin` and `end` in
/// `docs/BENCHMARKS.md` with `md` (which carries both markers).
pub fn write_kept(docs: &Path, begin: &str, end: &str, md: &str) -> Result<()> {
    let path = docs.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match kept_block(&text, begin, end) {
        Some(old) => text.replacen(old, md.trim_end(), 1),
        None => format!("{}\n\n{}\n", text.trim_end(), md.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_blocks_are_found_in_order_and_one_by_name() {
        let text = "# Benchmarks\n<!-- kept:notes -->\nA\n<!-- /kept:notes -->\nmid\n\
                    <!-- kept:scale -->\nB\n<!-- /kept:scale -->\n<!-- kept:open -->\nno end";
        assert_eq!(
            kept(text),
            [
                "<!-- kept:notes -->\nA\n<!-- /kept:notes -->",
                "<!-- kept:scale -->\nB\n<!-- /kept:scale -->",
            ]
        );
        assert_eq!(
            kept_block(text, "<!-- kept:scale -->", "<!-- /kept:scale -->"),
            Some("<!-- kept:scale -->\nB\n<!-- /kept:scale -->")
        );
    }
}
