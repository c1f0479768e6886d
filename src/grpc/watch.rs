//! WatchLoads: each load as one event, in order, from a resume token. A watcher learns of
//! new loads from the snapshot cell and reads them from the snapshot itself, so it can
//! neither miss a load (it subscribes before reading) nor repeat one (it remembers the
//! last load it sent).

use std::time::Duration;

use std::sync::Arc;

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
    tokens::{TokenSealer, UnsealError},
};

#[derive(Clone)]
pub struct WatchConfig {
    pub heartbeat_interval: Duration,
    /// How many loads back a resume token may point.
    pub resume_history_loads: u32,
    /// Cancelled when the server shuts down, to end open streams.
    pub shutdown: CancellationToken,
    /// Seals resume tokens (and page tokens).
    pub tokens: Arc<TokenSealer>,
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
/// What resume tokens are sealed for.
const PURPOSE: &str = "resume";
const NOT_THIS_HISTORY: &str = "the resume token does not belong to this server's history of loads; list the facts again and watch from now";

fn position_of(snapshot: &ReadSnapshot, load: LoadId) -> Position {
    Position {
        load,
        recorded_at_us: snapshot
            .load_record(load)
            .map_or(0, |record| to_micros(record.recorded_at)),
    }
}

fn encode(sealer: &TokenSealer, position: &Position) -> String {
    let payload = format!(
        "{TOKEN_VERSION}|{}|{}",
        position.load, position.recorded_at_us
    );
    sealer.seal(PURPOSE, &payload)
}

fn decode(sealer: &TokenSealer, token: &str) -> Result<Position, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "resume_token",
            "is not a resume token this server issued (pass resume_token from a WatchLoads response unchanged)",
        )
    };
    let payload = sealer.open(PURPOSE, token).map_err(|err| match err {
        UnsealError::Malformed => invalid(),
        // Well formed but not sealed here: another deployment's history (or a forgery).
        UnsealError::NotSealedHere => expired(NOT_THIS_HISTORY.into()),
    })?;
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
    let position = decode(&config.tokens, token)?;
    let head = snapshot.head();
    if !(0..=head).contains(&position.load) || position != position_of(snapshot, position.load) {
        return Err(expired(NOT_THIS_HISTORY.into()));
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

fn response(sealer: &TokenSealer, event: Event, position: &Position) -> api::WatchLoadsResponse {
    api::WatchLoadsResponse {
        event: Some(event),
        resume_token: encode(sealer, position),
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
                    response(
                        &config.tokens,
                        Event::Load(event),
                        &position_of(&current, load.id),
                    )
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
            &config.tokens,
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
                    let beat = response(&config.tokens, Event::Heartbeat(api::Heartbeat {}), &position);
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
    fn tokens_round_trip_and_refuse_forgeries() {
        let sealer = TokenSealer::new([5; 32]);
        let position = Position {
            load: 7,
            recorded_at_us: 1_780_000_000_000_000,
        };
        let token = encode(&sealer, &position);
        assert_eq!(decode(&sealer, &token).unwrap(), position);
        let forged = Position {
            load: i64::MIN,
            recorded_at_us: 0,
        };
        let forged = encode(&TokenSealer::new([6; 32]), &forged);
        assert!(decode(&sealer, &forged).is_err());
        assert!(decode(&sealer, "garbage").is_err());
    }
}
