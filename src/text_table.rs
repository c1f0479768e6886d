//! Plain-text tables, as the terminal and the text part of emails show them: columns
//! padded to their widest cell, and nothing a terminal would act on.

use std::borrow::Cow;

/// `text` safe to write to a terminal: control characters (ESC, NUL, CR, BEL, newlines)
/// escaped as `\u{1b}` and the like, so that text that came from elsewhere cannot move
/// the cursor, clear the screen or forge lines of output.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// Columns padded to their widest cell, with a rule under the header; every cell printable.
pub fn render_aligned(header: &[String], rows: &[Vec<String>]) -> String {
    let escape = |line: &[String]| -> Vec<String> {
        line.iter()
            .map(|text| printable(text).into_owned())
            .collect()
    };
    let escaped: Vec<Vec<String>> = std::iter::once(escape(header))
        .chain(rows.iter().map(|row| escape(row)))
        .collect();
    let lines: Vec<&[String]> = escaped.iter().map(Vec::as_slice).collect();
    let columns = lines.iter().map(|line| line.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            lines
                .iter()
                .filter_map(|line| line.get(column))
                .map(|text| text.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (index, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}

/// "AWS (Amazon)", as the article heads its columns.
pub fn column_title(display_name: &str, parent_company: &str) -> String {
    if parent_company.is_empty() || parent_company == display_name {
        display_name.to_owned()
    } else {
        format!("{display_name} ({parent_company})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("~$29B"), "~$29B");
        assert_eq!(
            printable("Evil\u{1b}[2J\r\u{7}\0 Corp"),
            "Evil\\u{1b}[2J\\r\\u{7}\\u{0} Corp"
        );
        let table = render_aligned(&["A\u{1b}]0;x".to_owned()], &[vec!["b\nc".to_owned()]]);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 3, "{table:?}");
    }
}
