//! Secrets read from files — `admin.token_file`, `database.url_file`,
//! `mail.smtp.password_file` — as Docker and Kubernetes hand secrets to a process, so that
//! none has to sit in the environment or the configuration file. A file's content,
//! without its final line break, stands for the setting; setting both is refused, and a
//! file that cannot be read is named, never quoted.

use std::path::Path;

use super::{DatabaseUrl, Secret, Settings, SettingsError};

/// The largest secret file read: a token, a password or a URL is far smaller, and a
/// wrong path (a log, a disk image) is refused instead of read into memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

impl Settings {
    pub(super) fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        if let Some(token) = read(
            "admin.token",
            self.admin.token.expose(),
            &self.admin.token_file,
        )? {
            self.admin.token = Secret::new(token);
        }
        if let Some(url) = read(
            "database.url",
            self.database.url.expose(),
            &self.database.url_file,
        )? {
            self.database.url = DatabaseUrl::new(url);
        }
        let smtp = &mut self.mail.smtp;
        if let Some(password) = read(
            "mail.smtp.password",
            smtp.password.expose(),
            &smtp.password_file,
        )? {
            smtp.password = Secret::new(password);
        }
        Ok(())
    }
}

/// The secret in `file`, when one is named; `inline` is the setting's own value.
fn read(key: &str, inline: &str, file: &Path) -> Result<Option<String>, SettingsError> {
    if file.as_os_str().is_empty() {
        return Ok(None);
    }
    if !inline.is_empty() {
        return Err(SettingsError(format!(
            "`{key}` and `{key}_file` are both set (give one of them)"
        )));
    }
    read_secret_file(&format!("`{key}_file`"), file).map(Some)
}

/// The secret a file holds, without its final line break; `what` names it in errors,
/// which never quote the file.
pub fn read_secret_file(what: &str, file: &Path) -> Result<String, SettingsError> {
    let unreadable =
        |reason: String| SettingsError(format!("{what}: cannot read {}: {reason}", file.display()));
    let size = std::fs::metadata(file)
        .map_err(|err| unreadable(err.to_string()))?
        .len();
    if size > MAX_SECRET_FILE_BYTES {
        return Err(unreadable(format!(
            "{size} bytes is more than a secret ({MAX_SECRET_FILE_BYTES} at most)"
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|err| unreadable(err.to_string()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(unreadable("it is empty".into()));
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn secrets_come_from_the_files_named_without_their_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin_token");
        std::fs::write(&token, "token-from-a-file-0123456789abcdef\n").unwrap();
        let password = dir.path().join("smtp_password");
        std::fs::write(&password, "pass word\r\n").unwrap();
        let url = dir.path().join("database_url");
        std::fs::write(&url, "postgres://runrate:s3cret@db/runrate").unwrap();
        let settings = Settings::load_from(
            None,
            environment(&[
                ("RUNRATE__ADMIN__TOKEN_FILE", token.to_str().unwrap()),
                (
                    "RUNRATE__MAIL__SMTP__PASSWORD_FILE",
                    password.to_str().unwrap(),
                ),
                ("RUNRATE__DATABASE__URL_FILE", url.to_str().unwrap()),
            ]),
        )
        .expect("settings with secret files");
        assert_eq!(
            settings.admin.token.expose(),
            "token-from-a-file-0123456789abcdef"
        );
        assert_eq!(settings.mail.smtp.password.expose(), "pass word");
        assert_eq!(
            settings.database.url.expose(),
            "postgres://runrate:s3cret@db/runrate"
        );
        // The file's secret is checked as the setting's own would be.
        std::fs::write(&token, "short\n").unwrap();
        let err = Settings::load_from(
            None,
            environment(&[("RUNRATE__ADMIN__TOKEN_FILE", token.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin.token"), "{err}");
    }

    #[test]
    fn a_secret_given_twice_or_unreadable_is_refused_by_name_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin_token");
        std::fs::write(&file, "token-from-a-file-0123456789abcdef").unwrap();
        let both = Settings::load_from(
            None,
            environment(&[
                (
                    "RUNRATE__ADMIN__TOKEN",
                    "token-in-the-environment-0123456789",
                ),
                ("RUNRATE__ADMIN__TOKEN_FILE", file.to_str().unwrap()),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            both.contains("`admin.token` and `admin.token_file`"),
            "{both}"
        );
        assert!(!both.contains("token-from-a-file") && !both.contains("token-in-the-environment"));

        let missing = dir.path().join("nowhere");
        let err = Settings::load_from(
            None,
            environment(&[(
                "RUNRATE__MAIL__SMTP__PASSWORD_FILE",
                missing.to_str().unwrap(),
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mail.smtp.password_file") && err.contains("nowhere"),
            "{err}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = Settings::load_from(
            None,
            environment(&[("RUNRATE__DATABASE__URL_FILE", empty.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("database.url_file") && err.contains("empty"),
            "{err}"
        );

        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'x'; 70 * 1024]).unwrap();
        let err = Settings::load_from(
            None,
            environment(&[("RUNRATE__ADMIN__TOKEN_FILE", huge.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than a secret"), "{err}");
    }
}
