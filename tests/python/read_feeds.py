"""Reads runrate's two feeds as feed readers do, and prints what they hold as JSON.

    read_feeds.py ATOM_FILE JSON_FEED_FILE

The Atom feed goes through feedparser (a parse problem sets `bozo`); the JSON Feed is
checked against the fields JSON Feed 1.1 requires and the types it gives them. Any
problem exits non-zero naming it.
"""

import json
import sys
from datetime import datetime

import feedparser


def fail(message):
    sys.exit(f"read_feeds.py: {message}")


def rfc3339(text, where):
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        fail(f"{where}: {text!r} is not an RFC 3339 date")
    if moment.tzinfo is None:
        fail(f"{where}: {text!r} has no offset")
    return text


def read_atom(path):
    with open(path, "rb") as file:
        feed = feedparser.parse(file.read())
    if feed.bozo:
        fail(f"the Atom feed does not parse cleanly: {feed.bozo_exception!r}")
    if feed.version != "atom10":
        fail(f"not an Atom 1.0 feed: {feed.version!r}")
    for key in ("id", "title", "updated"):
        if not feed.feed.get(key):
            fail(f"the Atom feed has no {key}")
    return [
        {
            "id": entry.id,
            "title": entry.title,
            "content": entry.content[0].value,
            "updated": entry.updated,
        }
        for entry in feed.entries
    ]


def read_json_feed(path):
    with open(path, "rb") as file:
        feed = json.load(file)
    if feed.get("version") != "https://jsonfeed.org/version/1.1":
        fail(f"not JSON Feed 1.1: version {feed.get('version')!r}")
    if not isinstance(feed.get("title"), str) or not feed["title"]:
        fail("the JSON Feed has no title")
    for key in ("home_page_url", "feed_url"):
        if key in feed and not str(feed[key]).startswith(("http://", "https://")):
            fail(f"{key} is not a URL: {feed[key]!r}")
    authors = feed.get("authors", [])
    if not isinstance(authors, list) or any(not isinstance(a, dict) for a in authors):
        fail("authors is not a list of objects")
    items = feed.get("items")
    if not isinstance(items, list):
        fail("the JSON Feed has no items list")
    read = []
    for number, item in enumerate(items):
        where = f"item {number}"
        if not isinstance(item.get("id"), str) or not item["id"]:
            fail(f"{where} has no id string")
        if not any(isinstance(item.get(key), str) for key in ("content_text", "content_html")):
            fail(f"{where} has neither content_text nor content_html")
        for key in ("date_published", "date_modified"):
            if key in item:
                rfc3339(item[key], f"{where} {key}")
        read.append({"id": item["id"], "title": item.get("title"), "content": item["content_text"]})
    return read


print(json.dumps({"atom": read_atom(sys.argv[1]), "json": read_json_feed(sys.argv[2])}))
