//! Subscriber addresses, parsed once at the edge: RFC 5321 lengths, internationalised
//! domains in their ASCII form, and nothing that could break out of a mail header.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A checked address: ASCII, lowercase, `local@domain` with an IDNA-encoded domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{address}` is not an email address runrate can send to: {reason}")]
pub struct EmailAddressError {
    pub address: String,
    pub reason: &'static str,
}

/// RFC 5321 §4.5.3.1: the longest local part, domain and path.
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_ADDRESS: usize = 254;

/// Characters RFC 5322 allows unquoted in a local part (besides letters and digits).
const LOCAL_PART_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";

impl EmailAddress {
    pub fn parse(text: &str) -> Result<Self, EmailAddressError> {
        let shown: String = text
            .chars()
            .take(80)
            .collect::<String>()
            .escape_default()
            .to_string();
        let fail = |reason| EmailAddressError {
            address: shown.clone(),
            reason,
        };
        let text = text.trim();
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(fail(
                "it contains spaces, line breaks or control characters",
            ));
        }
        let (local, domain) = text.rsplit_once('@').ok_or_else(|| fail("it has no @"))?;
        if local.is_empty() || local.len() > MAX_LOCAL_PART {
            return Err(fail("the part before @ must have 1 to 64 characters"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_PART_SPECIALS.contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(fail(
                "the part before @ may have ASCII letters, digits and !#$%&'*+-/=?^_`{|}~ with single dots between",
            ));
        }
        if domain.is_empty() || domain.len() > MAX_DOMAIN {
            return Err(fail("the domain must have 1 to 255 characters"));
        }
        let ascii_domain = idna::domain_to_ascii(domain)
            .map_err(|_| fail("the domain is not a valid (internationalised) domain name"))?;
        let labels: Vec<&str> = ascii_domain.split('.').collect();
        let labels_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !labels_ok {
            return Err(fail(
                "the domain must be a host name with a dot, such as example.com",
            ));
        }
        let address = format!("{}@{}", local.to_ascii_lowercase(), ascii_domain);
        if address.len() > MAX_ADDRESS {
            return Err(fail("it is longer than 254 characters"));
        }
        Ok(EmailAddress(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailAddressError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&text)
    }
}

impl From<EmailAddress> for String {
    fn from(address: EmailAddress) -> Self {
        address.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_internationalised_addresses() {
        assert_eq!(
            EmailAddress::parse(" Reader@Example.COM ")
                .unwrap()
                .as_str(),
            "reader@example.com"
        );
        assert_eq!(
            EmailAddress::parse("leser@bücher.de").unwrap().as_str(),
            "leser@xn--bcher-kva.de"
        );
        assert!(EmailAddress::parse("first.last+news@sub.example.co.uk").is_ok());
    }

    #[test]
    fn refuses_header_injection_and_malformed_addresses() {
        for bad in [
            "reader@example.com\r\nBcc: everyone@example.com",
            "reader@example.com\nX: y",
            "reader example@example.com",
            "no-at-sign",
            "@example.com",
            "reader@",
            "reader@localhost",
            "reader..x@example.com",
            ".reader@example.com",
            "rëader@example.com",
            "reader@-example.com",
            "reader@exa_mple.com",
            "\"quoted\"@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn enforces_rfc_5321_lengths() {
        let local = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local}@example.com")).is_ok());
        assert!(EmailAddress::parse(&format!("a{local}@example.com")).is_err());
        let long_domain = format!("{}.com", vec!["b".repeat(63); 4].join("."));
        assert!(EmailAddress::parse(&format!("reader@{long_domain}")).is_err());
    }
}
