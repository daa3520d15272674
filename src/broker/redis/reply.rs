//! Replies of the Lua scripts, read into the types the rest of the broker and the
//! node use.

use std::sync::Arc;
use std::time::Instant;

use redis::Value;

use super::id_from_redis;
use crate::broker::{BrokerError, Position};
use crate::event::{DataKind, EventId, EventType, NewEvent};
use crate::frame::Frame;
use crate::history::{HistoryRead, StreamHistory as StreamRead};
use crate::stream::StreamName;

/// One consistent read of several streams' history, as the script returns it.
#[derive(Debug)]
pub(super) struct RedisHistory {
    pub(super) epoch: String,
    floor: EventId,
    reclaimed: EventId,
    names_since: EventId,
    pub(super) last_issued: EventId,
    streams: Vec<StreamHistory>,
}

#[derive(Debug)]
struct StreamHistory {
    name: StreamName,
    present: bool,
    trimmed_through: EventId,
    frames: Vec<Arc<Frame>>,
}

impl RedisHistory {
    pub(super) fn parse(value: &Value) -> Result<Self, BrokerError> {
        let items = array(value)?;
        let [epoch, floor, reclaimed, names_since, last, streams @ ..] = items else {
            return Err(malformed());
        };
        let streams = streams.iter().map(StreamHistory::parse).collect::<Result<_, _>>()?;
        Ok(Self {
            epoch: text(epoch)?,
            floor: id_from_redis(&text(floor)?)?,
            reclaimed: id_from_redis(&text(reclaimed)?)?,
            names_since: id_from_redis(&text(names_since)?)?,
            last_issued: id_from_redis(&text(last)?)?,
            streams,
        })
    }

    /// The read as the node's gap logic takes it: a stream's events are known
    /// above the epoch's floor and above what its history lost (trimmed, or the whole
    /// history reclaimed); a stream the names index does not list, above the floor,
    /// what reclaiming lost and where the index started.
    pub(super) fn into_read(self) -> HistoryRead {
        let streams = self
            .streams
            .into_iter()
            .map(|stream| {
                let lost = if stream.present {
                    stream.trimmed_through
                } else {
                    self.reclaimed
                };
                StreamRead {
                    name: stream.name,
                    known_after: lost.max(self.floor),
                    frames: stream.frames,
                }
            })
            .collect();
        HistoryRead {
            last_issued: self.last_issued,
            streams,
            others_known_after: self.floor.max(self.reclaimed).max(self.names_since),
        }
    }
}

impl StreamHistory {
    fn parse(value: &Value) -> Result<Self, BrokerError> {
        let [name, present, trimmed_through, entries] = array(value)? else {
            return Err(malformed());
        };
        let name = StreamName::try_new(&text(name)?).map_err(|_| malformed())?;
        let present = matches!(present, Value::Int(1));
        let frames = array(entries)?
            .iter()
            .map(|entry| frame_from_entry(&name, entry))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name,
            present,
            trimmed_through: id_from_redis(&text(trimmed_through)?)?,
            frames,
        })
    }
}

/// `[id, [t, type, d, data(, j, 1)]]` from XRANGE, encoded once.
fn frame_from_entry(stream: &StreamName, entry: &Value) -> Result<Arc<Frame>, BrokerError> {
    let [id, fields] = array(entry)? else {
        return Err(malformed());
    };
    let id = id_from_redis(&text(id)?)?;
    let (mut event_type, mut data, mut kind) = (String::new(), String::new(), DataKind::Text);
    for pair in array(fields)?.chunks(2) {
        match (pair.first().map(text).transpose()?.as_deref(), pair.get(1)) {
            (Some("t"), Some(value)) => event_type = text(value)?,
            (Some("d"), Some(value)) => data = text(value)?,
            (Some("j"), Some(_)) => kind = DataKind::Json,
            _ => {}
        }
    }
    Ok(Arc::new(encode_frame(id, stream, &event_type, data, kind)))
}

/// Encodes an event read from Redis; an empty type means untyped.
pub(super) fn encode_frame(id: EventId, stream: &StreamName, event_type: &str, data: String, kind: DataKind) -> Frame {
    let event = NewEvent {
        stream: stream.clone(),
        // Types were validated at publish; an invalid one read back is dropped, not sent.
        event_type: EventType::try_new(event_type).ok(),
        data,
        kind,
    };
    Frame::event(id, Instant::now(), &event)
}

/// The reply of the `latest` script: `{{name, entry}…}`.
pub(super) fn latest_frames(value: &Value) -> Result<Vec<Arc<Frame>>, BrokerError> {
    array(value)?
        .iter()
        .map(|item| {
            let [name, entry] = array(item)? else {
                return Err(malformed());
            };
            let name = StreamName::try_new(&text(name)?).map_err(|_| malformed())?;
            frame_from_entry(&name, entry)
        })
        .collect()
}

/// The reply of the `position` script: `{head, newest id or '', held}`.
pub(super) fn position(value: &Value) -> Result<Position, BrokerError> {
    let [head, newest, held] = array(value)? else {
        return Err(malformed());
    };
    let newest = text(newest)?;
    Ok(Position {
        head: id_from_redis(&text(head)?)?,
        last_id: if newest.is_empty() {
            None
        } else {
            Some(id_from_redis(&newest)?)
        },
        buffered: text(held)?.parse().map_err(|_| malformed())?,
    })
}

pub(super) fn array(value: &Value) -> Result<&[Value], BrokerError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed()),
    }
}

pub(super) fn text(value: &Value) -> Result<String, BrokerError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| malformed()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(number) => Ok(number.to_string()),
        _ => Err(malformed()),
    }
}

pub(super) fn malformed() -> BrokerError {
    BrokerError::Unavailable("unexpected reply from Redis".to_owned())
}
