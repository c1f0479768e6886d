//! Opaque tokens the server hands out (page and resume tokens, the Message-IDs of its
//! emails): a payload and an HMAC-SHA256 tag under the server's key, in base64url. A
//! client can read a payload but cannot forge or alter one, so the numbers a token
//! carries are the server's own; every replica on one database shares the key, so a
//! token works on any of them.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The server's 256-bit secret key for its tokens, kept in the database so that every
/// replica shares it.
pub type TokenKey = [u8; 32];

/// Longest token accepted; runrate's are well under it.
const MAX_TOKEN_CHARS: usize = 512;
/// Bytes of the tag kept: 128 bits, beyond guessing.
const TAG_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsealError {
    /// Not shaped like a token at all.
    Malformed,
    /// Shaped like one, but not sealed with this server's key for this purpose: forged,
    /// altered, or issued by another deployment.
    NotSealedHere,
}

pub struct TokenSealer {
    key: TokenKey,
}

impl TokenSealer {
    pub fn new(key: TokenKey) -> Self {
        TokenSealer { key }
    }

    /// `purpose` keeps a token of one kind from being accepted as another.
    fn mac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    pub fn seal(&self, purpose: &str, payload: &str) -> String {
        let tag = self
            .mac(purpose, payload.as_bytes())
            .finalize()
            .into_bytes();
        let mut bytes = payload.as_bytes().to_vec();
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The payload of a token this server sealed for `purpose`.
    pub fn open(&self, purpose: &str, token: &str) -> Result<String, UnsealError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(UnsealError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| UnsealError::Malformed)?;
        let split = bytes
            .len()
            .checked_sub(TAG_BYTES)
            .ok_or(UnsealError::Malformed)?;
        let (payload, tag) = bytes.split_at(split);
        self.mac(purpose, payload)
            .verify_truncated_left(tag)
            .map_err(|_| UnsealError::NotSealedHere)?;
        String::from_utf8(payload.to_vec()).map_err(|_| UnsealError::Malformed)
    }

    /// Seals a payload of fields behind a format `version`, joined by `|`; only the last
    /// field may itself hold a `|`.
    pub fn seal_fields(&self, purpose: &str, version: &str, fields: &[&str]) -> String {
        let mut payload = version.to_owned();
        for field in fields {
            payload.push('|');
            payload.push_str(field);
        }
        self.seal(purpose, &payload)
    }

    /// The `N` fields of a token sealed by [`TokenSealer::seal_fields`] with `version`.
    pub fn open_fields<const N: usize>(
        &self,
        purpose: &str,
        version: &str,
        token: &str,
    ) -> Result<[String; N], UnsealError> {
        let payload = self.open(purpose, token)?;
        let mut parts = payload.splitn(N + 1, '|');
        if parts.next() != Some(version) {
            return Err(UnsealError::Malformed);
        }
        let fields: Vec<String> = parts.map(str::to_owned).collect();
        fields.try_into().map_err(|_| UnsealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_sealed_with_the_key_and_purpose_open() {
        let sealer = TokenSealer::new([7; 32]);
        let token = sealer.seal("page", "p1|abc|42");
        assert_eq!(sealer.open("page", &token).as_deref(), Ok("p1|abc|42"));
        let not_here = Err(UnsealError::NotSealedHere);
        assert_eq!(sealer.open("resume", &token), not_here);
        assert_eq!(TokenSealer::new([8; 32]).open("page", &token), not_here);

        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[9] = b'9';
        assert_eq!(
            sealer.open("page", &URL_SAFE_NO_PAD.encode(bytes)),
            not_here
        );
        let malformed = Err(UnsealError::Malformed);
        assert_eq!(sealer.open("page", ""), malformed);
        assert_eq!(sealer.open("page", "not base64 at all!"), malformed);
        assert_eq!(sealer.open("page", &"A".repeat(10_000)), malformed);
    }

    #[test]
    fn fields_come_back_as_sealed_under_their_version_only() {
        let sealer = TokenSealer::new([7; 32]);
        let token = sealer.seal_fields("page", "p1", &["abc", "x|y"]);
        assert_eq!(
            sealer.open_fields::<2>("page", "p1", &token),
            Ok(["abc".to_owned(), "x|y".to_owned()])
        );
        let malformed = Err(UnsealError::Malformed);
        assert_eq!(sealer.open_fields::<2>("page", "p2", &token), malformed);
        let short = sealer.seal_fields("page", "p1", &["abc"]);
        assert_eq!(sealer.open_fields::<2>("page", "p1", &short), malformed);
    }
}
