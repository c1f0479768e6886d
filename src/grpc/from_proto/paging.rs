//! Pagination (AIP-158): page sizes and opaque page tokens. A token carries the position
//! after the last item returned and a fingerprint of the request it belongs to, sealed
//! with the server's key, so that a token runrate did not issue, or one reused with other
//! request fields, is refused instead of silently misread.

use std::{fmt::Display, str::FromStr};

use sha2::{Digest, Sha256};

use crate::{domain::hex, grpc::ApiError, sealing::TokenSealer};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

const TOKEN_VERSION: &str = "p1";
/// What page tokens are sealed for.
const PURPOSE: &str = "page";

/// Which way a listing runs by the key its cursor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest key first (ids, periods).
    Ascending,
    /// Largest key first (loads and revisions, newest first).
    Descending,
}

/// Where a page starts and how long it is.
pub struct PageRequest<'s> {
    pub size: usize,
    /// The cursor of the last item of the previous page.
    pub after: Option<String>,
    fingerprint: String,
    sealer: &'s TokenSealer,
}

/// A short digest of the request fields a listing depends on.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize()[..8])
}

impl<'s> PageRequest<'s> {
    pub fn parse(
        page_size: i32,
        page_token: &str,
        fingerprint: String,
        sealer: &'s TokenSealer,
    ) -> Result<Self, ApiError> {
        let size = match page_size {
            size if size < 0 => {
                return Err(ApiError::invalid(
                    "page_size",
                    format!("{size} is negative (expected 0 for the default, or a positive size)"),
                ));
            }
            0 => DEFAULT_PAGE_SIZE,
            size => (size as usize).min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode(sealer, page_token, &fingerprint)?)
        };
        Ok(PageRequest {
            size,
            after,
            fingerprint,
            sealer,
        })
    }

    /// The cursor read as a number, for listings keyed by one (loads, revisions).
    pub fn after_number(&self) -> Result<Option<i64>, ApiError> {
        self.after
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::invalid("page_token", "is not a page token for this listing")
                })
            })
            .transpose()
    }

    /// One page of `items`, which run in `order` by `key`, from after the cursor; and
    /// the token for the next page, empty when there is none. The cursor holds the last
    /// key returned, as text.
    pub fn page_by<T, K>(
        &self,
        items: impl Iterator<Item = T>,
        order: Order,
        key: impl Fn(&T) -> K,
    ) -> Result<(Vec<T>, String), ApiError>
    where
        K: Ord + FromStr + Display,
    {
        let cursor = self
            .after
            .as_deref()
            .map(|text| {
                text.parse::<K>().map_err(|_| {
                    ApiError::invalid("page_token", "is not a page token for this listing")
                })
            })
            .transpose()?;
        let rest = items.filter(|item| match (&cursor, order) {
            (None, _) => true,
            (Some(cursor), Order::Ascending) => key(item) > *cursor,
            (Some(cursor), Order::Descending) => key(item) < *cursor,
        });
        Ok(self.page(rest, |item| key(item).to_string()))
    }

    /// Takes one page from `items` (already positioned after the cursor) and the token
    /// for the next page, empty when there is none.
    pub fn page<T>(
        &self,
        items: impl Iterator<Item = T>,
        cursor: impl Fn(&T) -> String,
    ) -> (Vec<T>, String) {
        let mut page: Vec<T> = items.take(self.size + 1).collect();
        if page.len() <= self.size {
            return (page, String::new());
        }
        page.truncate(self.size);
        let token = page
            .last()
            .map(|last| encode(self.sealer, &cursor(last), &self.fingerprint))
            .unwrap_or_default();
        (page, token)
    }
}

fn encode(sealer: &TokenSealer, cursor: &str, fingerprint: &str) -> String {
    sealer.seal_fields(PURPOSE, TOKEN_VERSION, &[fingerprint, cursor])
}

fn decode(sealer: &TokenSealer, token: &str, fingerprint: &str) -> Result<String, ApiError> {
    let [token_fingerprint, cursor] = sealer
        .open_fields(PURPOSE, TOKEN_VERSION, token)
        .map_err(|_| {
            ApiError::invalid(
                "page_token",
                "is not a page token this server issued (pass next_page_token from the previous response unchanged)",
            )
        })?;
    if token_fingerprint != fingerprint {
        return Err(ApiError::invalid(
            "page_token",
            "belongs to a request with other parameters (keep parent, filter and read_time the same while paging)",
        ));
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> TokenSealer {
        TokenSealer::new([3; 32])
    }

    #[test]
    fn pages_cover_every_item_once() {
        let sealer = sealer();
        let items: Vec<u32> = (0..7).collect();
        let fp = fingerprint(&["x"]);
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let request = PageRequest::parse(3, &token, fp.clone(), &sealer).unwrap();
            let after: Option<u32> = request.after.as_ref().map(|a| a.parse().unwrap());
            let rest = items
                .iter()
                .copied()
                .filter(|i| after.is_none_or(|a| *i > a));
            let (page, next) = request.page(rest, |i| i.to_string());
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn pages_by_key_run_either_way_and_refuse_a_cursor_of_another_kind() {
        let sealer = sealer();
        let fp = fingerprint(&["y"]);
        for (order, items) in [
            (Order::Ascending, vec![1i64, 2, 3, 4, 5]),
            (Order::Descending, vec![5i64, 4, 3, 2, 1]),
        ] {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let request = PageRequest::parse(2, &token, fp.clone(), &sealer).unwrap();
                let (page, next) = request
                    .page_by(items.iter().copied(), order, |i| *i)
                    .unwrap();
                seen.extend(page);
                if next.is_empty() {
                    break;
                }
                token = next;
            }
            assert_eq!(seen, items, "{order:?}");
        }
        let words = PageRequest::parse(1, "", fp.clone(), &sealer).unwrap();
        let (_, token) = words
            .page_by(
                ["a".to_string(), "b".to_string()].into_iter(),
                Order::Ascending,
                |w| w.clone(),
            )
            .unwrap();
        let numbers = PageRequest::parse(1, &token, fp, &sealer).unwrap();
        assert!(
            numbers
                .page_by([1i64].into_iter(), Order::Ascending, |i| *i)
                .is_err()
        );
    }

    #[test]
    fn refuses_forged_and_foreign_tokens() {
        let sealer = sealer();
        let fp = fingerprint(&["a"]);
        let request = PageRequest::parse(1, "", fp.clone(), &sealer).unwrap();
        let (_, token) = request.page([1, 2].into_iter(), |i| i.to_string());
        assert!(PageRequest::parse(1, &token, fp.clone(), &sealer).is_ok());
        assert!(PageRequest::parse(1, &token, fingerprint(&["b"]), &sealer).is_err());
        assert!(PageRequest::parse(1, "bm90IGEgdG9rZW4", fp.clone(), &sealer).is_err());
        let other_server = TokenSealer::new([4; 32]);
        let forged = encode(&other_server, "9", &fp);
        assert!(PageRequest::parse(1, &forged, fp, &sealer).is_err());
    }

    #[test]
    fn sizes_default_cap_and_refuse_negatives() {
        let sealer = sealer();
        let fp = fingerprint(&[]);
        assert_eq!(
            PageRequest::parse(0, "", fp.clone(), &sealer).unwrap().size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            PageRequest::parse(5000, "", fp.clone(), &sealer)
                .unwrap()
                .size,
            MAX_PAGE_SIZE
        );
        assert!(PageRequest::parse(-1, "", fp, &sealer).is_err());
    }
}
