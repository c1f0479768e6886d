//! WatchLoads: each load as one event, in order, from a resume token. A watcher learns of
//! new loads from the snapshot cell and reads them from the snapshot itself, so it can
//! neither miss a load (it subscribes before reading) nor repeat one (it remembers the
//! last load it sent).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    domain::LoadId,
    snapshot::{ReadSnapshot, SharedSnapshot},
    store::to_micros,
};

use super::{
    ApiError, convert,
    pb::runrate::v1::{self as api, watch_loads_response::Event},
};

#[derive(Clone)]
pub struct WatchConfig {
    pub heartbeat_interval: Duration,
    /// How many loads back a resume token may point.
    pub resume_history_loads: u32,
    /// Cancelled when the server shuts down, to end open streams.
    pub shutdown: CancellationToken,
}

/// Events buffered per watcher before it must read on.
const STREAM_BUFFER: usize = 16;

/// The position after a load: its id and when it was recorded (which tells apart two
/// stores that reached the same id).
#[derive(Debug, PartialEq, Eq)]
struct Position {
    load: LoadId,
    recorded_at_us: i64,
}

const TOKEN_VERSION: &str = "w1";

fn checksum(payload: &str) -> String {
    let digest = Sha256::digest(format!("runrate resume token {payload}").as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn position_of(snapshot: &ReadSnapshot, load: LoadId) -> Position {
    Position {
        load,
        recorded_at_us: snapshot
            .load_record(load)
            .map_or(0, |record| to_micros(record.recorded_at)),
    }
}

fn encode(position: &Position) -> String {
    let payload = format!(
        "{TOKEN_VERSION}|{}|{}",
        position.load, position.recorded_at_us
    );
    let sum = checksum(&payload);
    URL_SAFE_NO_PAD.encode(format!("{payload}|{sum}"))
}

fn decode(token: &str) -> Result<Position, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "resume_token",
            "is not a resume token this server issued (pass resume_token from a WatchLoads response unchanged)",
        )
    };
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let (payload, sum) = text.rsplit_once('|').ok_or_else(invalid)?;
    if checksum(payload) != sum {
        return Err(invalid());
    }
    let parts: Vec<&str> = payload.split('|').collect();
    match parts.as_slice() {
        [TOKEN_VERSION, load, recorded] => Ok(Position {
            load: load.parse().map_err(|_| invalid())?,
            recorded_at_us: recorded.parse().map_err(|_| invalid())?,
        }),
        _ => Err(invalid()),
    }
}

fn expired(message: String) -> ApiError {
    ApiError::FailedPrecondition {
        reason: "RESUME_TOKEN_EXPIRED",
        message,
    }
}

/// Checks a resume token against the snapshot and returns the last load it has seen.
fn starting_load(
    snapshot: &ReadSnapshot,
    token: &str,
    config: &WatchConfig,
) -> Result<LoadId, ApiError> {
    if token.is_empty() {
        return Ok(snapshot.head());
    }
    let position = decode(token)?;
    let head = snapshot.head();
    if position.load > head || position != position_of(snapshot, position.load) {
        return Err(expired(
            "the resume token does not belong to this server's history of loads; list the facts again and watch from now".into(),
        ));
    }
    if head - position.load > i64::from(config.resume_history_loads) {
        return Err(expired(format!(
            "the resume token is {} loads old, more than the {} a watch can resume from; list the facts again and watch from now",
            head - position.load,
            config.resume_history_loads
        )));
    }
    Ok(position.load)
}

fn response(event: Event, position: &Position) -> api::WatchLoadsResponse {
    api::WatchLoadsResponse {
        event: Some(event),
        resume_token: encode(position),
    }
}

/// Opens a watch: checks the token now, then streams from a task of its own.
pub fn watch_loads(
    snapshot: SharedSnapshot,
    config: WatchConfig,
    resume_token: &str,
) -> Result<ReceiverStream<Result<api::WatchLoadsResponse, Status>>, ApiError> {
    // Subscribe before reading the snapshot: a load installed in between still wakes us.
    let mut heads = snapshot.subscribe();
    heads.borrow_and_update();
    let mut last_sent = starting_load(&snapshot.load(), resume_token, &config)?;
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let send_new_loads = |last_sent: &mut LoadId| {
            let current = snapshot.load_full();
            let events: Vec<api::WatchLoadsResponse> = current
                .loads()
                .iter()
                .filter(|load| load.id > *last_sent)
                .map(|load| {
                    let event = api::LoadEvent {
                        load: Some(convert::load(load, current.load_changes(load.id))),
                        facts: current.load_changes(load.id).map(convert::fact).collect(),
                    };
                    response(Event::Load(event), &position_of(&current, load.id))
                })
                .collect();
            if let Some(newest) = current.loads().last() {
                *last_sent = (*last_sent).max(newest.id);
            }
            (events, current)
        };
        let (backlog, current) = send_new_loads(&mut last_sent);
        for event in backlog {
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
        let current_marker = response(
            Event::Current(api::CurrentMarker {}),
            &position_of(&current, last_sent),
        );
        if sender.send(Ok(current_marker)).await.is_err() {
            return;
        }
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + config.heartbeat_interval,
            config.heartbeat_interval,
        );
        loop {
            tokio::select! {
                _ = config.shutdown.cancelled() => {
                    let _ = sender
                        .send(Err(Status::unavailable(
                            "the server is shutting down; reconnect and resume with the last resume_token",
                        )))
                        .await;
                    return;
                }
                _ = sender.closed() => return,
                changed = heads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let (events, _) = send_new_loads(&mut last_sent);
                    for event in events {
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    heartbeat.reset();
                }
                _ = heartbeat.tick() => {
                    let position = position_of(&snapshot.load(), last_sent);
                    let beat = response(Event::Heartbeat(api::Heartbeat {}), &position);
                    if sender.send(Ok(beat)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let position = Position {
            load: 7,
            recorded_at_us: 1_780_000_000_000_000,
        };
        let token = encode(&position);
        assert_eq!(decode(&token).unwrap(), position);
        let forged = URL_SAFE_NO_PAD.encode("w1|8|1780000000000000|000000000000");
        assert!(decode(&forged).is_err());
        assert!(decode("garbage").is_err());
    }
}
