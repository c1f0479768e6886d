//! Messages from where a mail system leaves them: a Maildir (`new/` and `cur/`), an mbox
//! file, or one message per file. (The mbox crates on crates.io are unmaintained; the
//! format is a few lines: messages start at a `From ` line, and `>From ` in a body is an
//! escaped `From `.)

use std::path::{Path, PathBuf};

use anyhow::Context;

/// One message and where it came from, for reporting.
pub struct MailboxMessage {
    pub origin: String,
    pub bytes: Vec<u8>,
}

/// Every message under `path`.
pub fn read_messages(path: &Path) -> anyhow::Result<Vec<MailboxMessage>> {
    if path.is_dir() {
        let mut files = Vec::new();
        let subdirectories: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .map(|name| path.join(name))
            .filter(|dir| dir.is_dir())
            .collect();
        let directories = if subdirectories.is_empty() {
            vec![path.to_path_buf()]
        } else {
            subdirectories
        };
        for directory in directories {
            for entry in std::fs::read_dir(&directory)
                .with_context(|| format!("cannot list {}", directory.display()))?
            {
                let file = entry?.path();
                if file.is_file() {
                    files.push(file);
                }
            }
        }
        files.sort();
        return files
            .into_iter()
            .map(|file| {
                Ok(MailboxMessage {
                    bytes: std::fs::read(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                    origin: file.display().to_string(),
                })
            })
            .collect();
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !bytes.starts_with(b"From ") {
        return Ok(vec![MailboxMessage {
            origin: path.display().to_string(),
            bytes,
        }]);
    }
    Ok(split_mbox(&bytes)
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| MailboxMessage {
            origin: format!("{} #{}", path.display(), index + 1),
            bytes,
        })
        .collect())
}

/// The messages of an mbox file, their `From ` separator lines dropped and `>From `
/// unescaped.
fn split_mbox(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut at_line_start = true;
    let mut line_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if at_line_start {
            line_start = index;
        }
        at_line_start = byte == b'\n';
        if byte != b'\n' && index + 1 != bytes.len() {
            continue;
        }
        let line = &bytes[line_start..=index];
        if line.starts_with(b"From ") {
            messages.push(Vec::new());
        } else if let Some(message) = messages.last_mut() {
            // mboxrd: `>From `, `>>From `, … lose one `>`.
            let quoted = line.iter().take_while(|&&b| b == b'>').count();
            let unescaped = if quoted > 0 && line[quoted..].starts_with(b"From ") {
                &line[1..]
            } else {
                line
            };
            message.extend_from_slice(unescaped);
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_splits_at_from_lines_and_unescapes_bodies() {
        let mbox = b"From a@example.com Mon Jan  1 00:00:00 2026\nSubject: one\n\n>From here on\nbody\n\nFrom b@example.com Mon Jan  1 00:00:01 2026\nSubject: two\n\nsecond";
        let messages = split_mbox(mbox);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0], b"Subject: one\n\nFrom here on\nbody\n\n");
        assert_eq!(messages[1], b"Subject: two\n\nsecond");
    }
}
