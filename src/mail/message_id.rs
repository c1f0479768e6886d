//! How an email's Message-ID names the delivery it carries, so that a bounce or an abuse
//! report quoting it leads back to that delivery: the delivery id sealed under the
//! server's key, which no one else can forge to suppress an address of their choosing.

use std::sync::Arc;

use crate::sealing::TokenSealer;

const PURPOSE: &str = "message-id";
const VERSION: &str = "m1";

#[derive(Clone)]
pub struct MessageIds {
    tokens: Arc<TokenSealer>,
    domain: String,
}

impl MessageIds {
    pub fn new(tokens: Arc<TokenSealer>, domain: &str) -> Self {
        MessageIds {
            tokens,
            domain: domain.to_owned(),
        }
    }

    /// `<sealed-delivery-id@domain>`: the same for every attempt at one delivery.
    pub fn for_delivery(&self, delivery: i64) -> String {
        let sealed = self
            .tokens
            .seal_fields(PURPOSE, VERSION, &[&delivery.to_string()]);
        format!("<{sealed}@{}>", self.domain)
    }

    /// The delivery a Message-ID this server wrote names; `None` for any other.
    pub fn delivery_of(&self, message_id: &str) -> Option<i64> {
        let inner = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let (sealed, _domain) = inner.split_once('@')?;
        let [delivery] = self
            .tokens
            .open_fields::<1>(PURPOSE, VERSION, sealed)
            .ok()?;
        delivery.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_leads_back_to_its_delivery_and_only_ours_do() {
        let ids = MessageIds::new(Arc::new(TokenSealer::new([5; 32])), "example.com");
        let id = ids.for_delivery(4711);
        assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
        assert_eq!(ids.delivery_of(&id), Some(4711));
        assert_eq!(ids.delivery_of(&format!(" {id} ")), Some(4711));
        let elsewhere = MessageIds::new(Arc::new(TokenSealer::new([6; 32])), "example.com");
        assert_eq!(elsewhere.delivery_of(&id), None);
        assert_eq!(ids.delivery_of("<4711@example.com>"), None);
        assert_eq!(ids.delivery_of("no id at all"), None);
    }
}
