//! The value types of settings, each parsed once where it is read: listen addresses,
//! durations written as text, secrets that never print, database URLs that print without
//! their passwords, and the origins browsers may call from.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret setting: never printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(***)"
        })
    }
}

/// A database URL, which may carry a password: `Display` and `Debug` print it with the
/// password (and any `password` query parameter) replaced by `***`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(value: impl Into<String>) -> Self {
        DatabaseUrl(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(mut url) = url::Url::parse(&self.0) else {
            // Not a URL: its parts cannot be told apart, so none of it is shown.
            return f.write_str("(an unparseable database URL)");
        };
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(key, value)| {
                    let secret = key.to_ascii_lowercase().contains("password");
                    let value = if secret {
                        "***".into()
                    } else {
                        value.into_owned()
                    };
                    (key.into_owned(), value)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(url.as_str())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A socket address written `HOST:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress(pub SocketAddr);

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_listen_address(&text).map(ListenAddress)
    }
}

fn parse_listen_address<E: serde::de::Error>(text: &str) -> Result<SocketAddr, E> {
    text.parse().map_err(|_| {
        E::custom(format!(
            "`{text}` is not a listen address (expected IP:PORT such as 127.0.0.1:50051)"
        ))
    })
}

/// A listen address, or empty for a listener that is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalListenAddress(pub Option<SocketAddr>);

impl Serialize for OptionalListenAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(address) => serializer.collect_str(&address),
            None => serializer.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for OptionalListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Ok(OptionalListenAddress(None));
        }
        parse_listen_address(&text).map(|address| OptionalListenAddress(Some(address)))
    }
}

/// The origins browsers may call the APIs from: none, any (`*`), or a list, each
/// `scheme://host[:port]` as a browser sends it in `Origin` (lowercase, no path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    #[default]
    None,
    Any,
    List(Vec<String>),
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let entries: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        match entries.as_slice() {
            [] => Ok(CorsOrigins::None),
            ["*"] => Ok(CorsOrigins::Any),
            _ => entries
                .iter()
                .map(|entry| parse_origin(entry))
                .collect::<Result<_, _>>()
                .map(CorsOrigins::List),
        }
    }
}

/// One origin, lowercased; anything a browser would never send as `Origin` is refused.
fn parse_origin(text: &str) -> Result<String, String> {
    let expected = "an origin like https://dashboard.example or http://127.0.0.1:3000, \
                    or * alone for any";
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL ({expected})"))?;
    let (Some(scheme @ ("http" | "https")), Some(authority)) = (uri.scheme_str(), uri.authority())
    else {
        return Err(format!(
            "`{text}` is not an http or https origin ({expected})"
        ));
    };
    let origin = format!("{scheme}://{authority}").to_ascii_lowercase();
    if !text.eq_ignore_ascii_case(&origin) || authority.as_str().contains('@') {
        return Err(format!(
            "`{text}` is more than an origin: no path, query, user or trailing slash \
             ({expected})"
        ));
    }
    Ok(origin)
}

impl Serialize for CorsOrigins {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CorsOrigins::None => serializer.serialize_str(""),
            CorsOrigins::Any => serializer.serialize_str("*"),
            CorsOrigins::List(origins) => serializer.serialize_str(&origins.join(",")),
        }
    }
}

impl<'de> Deserialize<'de> for CorsOrigins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_comma_separated(deserializer)
    }
}

/// A value written as a comma-separated string (as environment variables give it) or as
/// a TOML list, parsed from the string the list would join into.
fn parse_comma_separated<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        List(Vec<String>),
    }
    let text = match Written::deserialize(deserializer)? {
        Written::Text(text) => text,
        Written::List(entries) => entries.join(","),
    };
    text.parse().map_err(serde::de::Error::custom)
}

/// The proxies whose `X-Forwarded-For` is believed: addresses and networks, written
/// `10.0.0.0/8, 127.0.0.1` (a bare address is the network of it alone) or as a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Whether `address` is one of them (an IPv4 address written as IPv6 counts as itself).
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|network| network.trunc())
                    .map_err(|_| {
                        format!(
                            "`{entry}` is not an address or a network (expected e.g. 127.0.0.1 or 10.0.0.0/8)"
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let written: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        serializer.serialize_str(&written.join(","))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_comma_separated(deserializer)
    }
}

/// A duration written like `10s`, `500ms` or `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextDuration(pub Duration);

impl fmt::Display for TextDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for TextDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TextDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(TextDuration)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration (expected a number and a unit, such as 10s or 500ms)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_origins_as_browsers_send_them() {
        let parse = |text: &str| text.parse::<CorsOrigins>();
        assert_eq!(parse(""), Ok(CorsOrigins::None));
        assert_eq!(parse(" * "), Ok(CorsOrigins::Any));
        assert_eq!(
            parse("https://Dashboard.example, http://127.0.0.1:3000"),
            Ok(CorsOrigins::List(vec![
                "https://dashboard.example".into(),
                "http://127.0.0.1:3000".into()
            ]))
        );
        for (bad, named) in [
            ("https://dashboard.example/", "trailing slash"),
            ("https://dashboard.example/app", "no path"),
            ("https://user@dashboard.example", "user"),
            ("dashboard.example", "http or https"),
            ("ftp://dashboard.example", "http or https"),
            ("*, https://dashboard.example", "`*`"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_and_networks() {
        let trusted: TrustedProxies = " 10.0.0.0/8, 127.0.0.1 ,2001:db8::/32".parse().unwrap();
        for inside in [
            "10.200.3.4",
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8:5::1",
        ] {
            assert!(trusted.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["11.0.0.1", "127.0.0.2", "2001:db9::1"] {
            assert!(!trusted.contains(outside.parse().unwrap()), "{outside}");
        }
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        let err = "10.0.0.0/33".parse::<TrustedProxies>().unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        // What is written reads back the same.
        let written = serde_json::to_value(&trusted).unwrap();
        assert_eq!(
            serde_json::from_value::<TrustedProxies>(written).unwrap(),
            trusted
        );
    }

    #[test]
    fn database_urls_print_without_their_passwords() {
        let url = DatabaseUrl::new(
            "postgres://runrate:s3cret-pw@db.internal:5432/runrate?sslmode=require&password=other-pw",
        );
        for printed in [url.to_string(), format!("{url:?}")] {
            assert!(!printed.contains("s3cret-pw"), "{printed}");
            assert!(!printed.contains("other-pw"), "{printed}");
            assert!(
                printed.contains("runrate:***@db.internal:5432/runrate"),
                "{printed}"
            );
            assert!(printed.contains("sslmode=require"), "{printed}");
        }
        let garbled = DatabaseUrl::new("postgres//runrate:s3cret-pw@db");
        assert!(!garbled.to_string().contains("s3cret-pw"));
        assert_eq!(url.expose().matches("s3cret-pw").count(), 1);
    }
}
