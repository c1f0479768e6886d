//! Feeds of loads, for feed readers and automation that would rather poll than get an
//! email: Atom (RFC 4287, written by `atom_syndication`) at `/feed.atom` and JSON Feed
//! 1.1 at `/feed.json` (serde: JSON Feed is plain JSON, and no maintained crate writes
//! version 1.1). One entry per load, newest first, saying what it brought in the words
//! of its update email, under an id that never changes (`tag:` URI, RFC 4151).
//! Both are built once per load and answered with an ETag, so a poller that sends it
//! back gets `304 Not Modified` until the next load.

use std::{sync::Arc, time::SystemTime};

use arc_swap::ArcSwapOption;
use atom_syndication::{Content, Entry, Feed, FixedDateTime, Link, Person, Text};
use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::Serialize;

use crate::{
    catalog::{ReadSnapshot, summary::UpdateSummary},
    domain::{LoadId, LoadRecord},
};

use super::WebState;

/// Loads in a feed, newest first: a reader polling it needs the recent ones, and the
/// whole history is the `ListLoads` call.
pub const MAX_ENTRIES: usize = 50;

const FEED_TITLE: &str = "runrate: cloud AI figures, load by load";

/// Both feeds as of one load, ready to send.
pub struct Feeds {
    head: LoadId,
    etag: HeaderValue,
    atom: Bytes,
    json: Bytes,
}

/// The feeds of the current snapshot, rebuilt on the first request after a load.
#[derive(Default)]
pub struct FeedCache {
    current: ArcSwapOption<Feeds>,
}

impl FeedCache {
    fn get(&self, snapshot: &ReadSnapshot, base_url: &str) -> Arc<Feeds> {
        if let Some(feeds) = self.current.load_full()
            && feeds.head == snapshot.head()
        {
            return feeds;
        }
        let feeds = Arc::new(build(snapshot, base_url));
        self.current.store(Some(feeds.clone()));
        feeds
    }
}

pub async fn atom(State(state): State<WebState>, request: HeaderMap) -> Response {
    let feeds = state.feeds.get(&state.snapshot.load(), &state.base_url);
    answer(&feeds, &request, "application/atom+xml", feeds.atom.clone())
}

pub async fn json(State(state): State<WebState>, request: HeaderMap) -> Response {
    let feeds = state.feeds.get(&state.snapshot.load(), &state.base_url);
    answer(
        &feeds,
        &request,
        "application/feed+json",
        feeds.json.clone(),
    )
}

fn answer(feeds: &Feeds, request: &HeaderMap, content_type: &'static str, body: Bytes) -> Response {
    // Pollers revalidate every time; an unchanged feed costs them a 304.
    let headers = [
        (header::ETAG, feeds.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if etag_matches(request, &feeds.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (headers, [content_type], body).into_response()
}

/// Whether `If-None-Match` names this ETag (weak comparison, RFC 9110 13.1.2) or is `*`.
fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == ours)
}

/// One load as a feed entry.
struct LoadEntry {
    id: String,
    title: String,
    text: String,
    recorded_at: SystemTime,
}

fn build(snapshot: &ReadSnapshot, base_url: &str) -> Feeds {
    let entries: Vec<LoadEntry> = snapshot
        .loads()
        .iter()
        .rev()
        .take(MAX_ENTRIES)
        .map(|load| entry(snapshot, load, base_url))
        .collect();
    let head = snapshot.head();
    Feeds {
        head,
        // The release is part of it: a new one may write the same loads differently.
        etag: HeaderValue::from_str(&format!("\"{}-{head}\"", env!("CARGO_PKG_VERSION")))
            .expect("digits, dots and dashes"),
        atom: Bytes::from(atom_feed(&entries, snapshot, base_url)),
        json: Bytes::from(json_feed(&entries, base_url)),
    }
}

fn entry(snapshot: &ReadSnapshot, load: &LoadRecord, base_url: &str) -> LoadEntry {
    let (title, text) = match UpdateSummary::of_load(snapshot, load.id) {
        Some(summary) => {
            let mut paragraphs = vec![summary.lead];
            paragraphs.extend(summary.headlines);
            paragraphs.extend(summary.revisions);
            (summary.subject, paragraphs.join("\n\n"))
        }
        None => (
            format!("Load {}: no figure changed", load.id),
            format!(
                "Load {} changed no figure ({} unchanged, {} definitions changed).",
                load.id, load.facts_unchanged, load.definitions_changed
            ),
        ),
    };
    let date = humantime::format_rfc3339_seconds(load.recorded_at).to_string();
    LoadEntry {
        // tag:AUTHORITY,DATE:SPECIFIC; the date is the load's own, so the id is fixed
        // when the load is made.
        id: format!(
            "tag:{},{}:runrate/loads/{}",
            authority(base_url),
            &date[..10],
            load.id
        ),
        title,
        text,
        recorded_at: load.recorded_at,
    }
}

/// The host of the public base URL, the tag's authority.
fn authority(base_url: &str) -> String {
    url::Url::parse(base_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into())
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn atom_feed(entries: &[LoadEntry], snapshot: &ReadSnapshot, base_url: &str) -> String {
    let date = |time: SystemTime| {
        FixedDateTime::parse_from_rfc3339(&rfc3339(time)).expect("humantime writes RFC 3339")
    };
    let link = |rel: &str, href: String, mime_type: &str| Link {
        href,
        rel: rel.into(),
        mime_type: Some(mime_type.into()),
        ..Link::default()
    };
    let updated = snapshot
        .loads()
        .last()
        .map_or(SystemTime::UNIX_EPOCH, |load| load.recorded_at);
    let feed = Feed {
        title: Text::plain(FEED_TITLE),
        id: format!("{base_url}/feed.atom"),
        updated: date(updated),
        authors: vec![Person {
            name: "runrate".into(),
            ..Person::default()
        }],
        links: vec![
            link(
                "self",
                format!("{base_url}/feed.atom"),
                "application/atom+xml",
            ),
            link("alternate", format!("{base_url}/"), "text/html"),
        ],
        lang: Some("en".into()),
        entries: entries
            .iter()
            .map(|entry| Entry {
                id: entry.id.clone(),
                title: Text::plain(entry.title.clone()),
                updated: date(entry.recorded_at),
                published: Some(date(entry.recorded_at)),
                links: vec![link("alternate", format!("{base_url}/"), "text/html")],
                content: Some(Content {
                    value: Some(entry.text.clone()),
                    content_type: Some("text".into()),
                    ..Content::default()
                }),
                ..Entry::default()
            })
            .collect(),
        ..Feed::default()
    };
    feed.to_string()
}

/// JSON Feed 1.1 (https://jsonfeed.org/version/1.1), the fields runrate fills.
#[derive(Serialize)]
struct JsonFeed<'a> {
    version: &'static str,
    title: &'static str,
    home_page_url: String,
    feed_url: String,
    language: &'static str,
    authors: [JsonAuthor; 1],
    items: Vec<JsonItem<'a>>,
}

#[derive(Serialize)]
struct JsonAuthor {
    name: &'static str,
}

#[derive(Serialize)]
struct JsonItem<'a> {
    id: &'a str,
    url: String,
    title: &'a str,
    content_text: &'a str,
    date_published: String,
}

fn json_feed(entries: &[LoadEntry], base_url: &str) -> Vec<u8> {
    let feed = JsonFeed {
        version: "https://jsonfeed.org/version/1.1",
        title: FEED_TITLE,
        home_page_url: format!("{base_url}/"),
        feed_url: format!("{base_url}/feed.json"),
        language: "en",
        authors: [JsonAuthor { name: "runrate" }],
        items: entries
            .iter()
            .map(|entry| JsonItem {
                id: &entry.id,
                url: format!("{base_url}/"),
                title: &entry.title,
                content_text: &entry.text,
                date_published: rfc3339(entry.recorded_at),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&feed).expect("a feed serializes")
}
