//! A subscriber: opens `GET /events?stream=…`, reads the SSE stream with its own
//! minimal parser, checks every event's publisher sequence number, and resumes with
//! `Last-Event-ID` whenever the stream ends or breaks.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::http::{Dechunker, connect, read_head, read_more};
use crate::shared::{Shared, now_us};

/// Runs until aborted.
pub(crate) async fn run(shared: Rc<Shared>, index: usize) {
    let mut opened = false;
    loop {
        match session(&shared, index, &mut opened).await {
            Ok(()) => {}
            Err(error) => {
                if shared.subscribe_errors.get() == 0 {
                    eprintln!("first subscribe error: {error:#}");
                }
                shared.subscribe_errors.set(shared.subscribe_errors.get() + 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if opened {
            shared.subscribers.borrow_mut()[index].reconnects += 1;
        }
    }
}

async fn session(shared: &Shared, index: usize, opened: &mut bool) -> anyhow::Result<()> {
    let request = {
        let subscribers = shared.subscribers.borrow();
        let me = &subscribers[index];
        shared.target.subscribe_request(me.stream, me.last_id.as_deref())
    };
    let mut buf = Vec::with_capacity(4096);
    let (mut socket, head) = {
        let _permit = shared.connect_gate.acquire().await?;
        let mut socket = connect(shared.target.addr, index).await?;
        socket.write_all(&request).await?;
        let head = read_head(&mut socket, &mut buf).await?;
        (socket, head)
    };
    if head.status != 200 {
        // A refusal that retrying cannot fix (bad token, bad request) ends the run.
        if (400..500).contains(&head.status) && head.status != 429 && head.status != 408 {
            shared
                .fatal
                .replace(Some(format!("subscribe answered {}", head.status)));
            shared.progress.notify_waiters();
        }
        anyhow::bail!("subscribe answered {}", head.status);
    }
    if !*opened {
        *opened = true;
        shared.opened.set(shared.opened.get() + 1);
        shared.progress.notify_waiters();
    }
    let mut chunks = Dechunker::default();
    let mut body = Vec::with_capacity(4096);
    let mut parser = Parser::default();
    loop {
        if head.chunked {
            let consumed = chunks.feed(&buf, &mut body)?;
            buf.drain(..consumed);
        } else {
            body.append(&mut buf);
        }
        if !body.is_empty() {
            let consumed = parser.feed(&body, |event| deliver(shared, index, event));
            body.drain(..consumed);
        }
        if chunks.finished || read_more(&mut socket, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// One dispatched SSE event.
#[derive(Clone, Copy)]
struct Event<'a> {
    id: Option<&'a [u8]>,
    gap: bool,
    data: &'a [u8],
}

/// Line-based SSE parser (the fields this generator needs: id, event, data).
#[derive(Debug, Default)]
struct Parser {
    id: Option<Vec<u8>>,
    gap: bool,
    data: Vec<u8>,
}

impl Parser {
    /// Dispatches every complete event in `input`; returns the bytes consumed.
    fn feed(&mut self, input: &[u8], mut on_event: impl FnMut(Event<'_>)) -> usize {
        let mut at = 0;
        while let Some(end) = input[at..].iter().position(|&b| b == b'\n') {
            let mut line = &input[at..at + end];
            at += end + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.is_empty() {
                if !self.data.is_empty() || self.gap {
                    on_event(Event {
                        id: self.id.as_deref(),
                        gap: self.gap,
                        data: &self.data,
                    });
                }
                self.id = None;
                self.gap = false;
                self.data.clear();
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(0) => continue, // comment (heartbeat)
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"data" => {
                    if !self.data.is_empty() {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                }
                b"id" => self.id = Some(value.to_vec()),
                b"event" => self.gap = value == b"gap",
                _ => {}
            }
        }
        at
    }
}

fn deliver(shared: &Shared, index: usize, event: Event<'_>) {
    let now = Instant::now();
    shared.last_delivery.set(Some(now));
    {
        let mut subscribers = shared.subscribers.borrow_mut();
        let me = &mut subscribers[index];
        if let Some(id) = event.id {
            me.last_id = Some(String::from_utf8_lossy(id).into_owned());
        }
        if event.gap {
            me.gaps += 1;
            return;
        }
        let Some((publisher, seq, sent_us)) = parse_payload(event.data) else {
            return;
        };
        let Some(next) = me.next_seq.get_mut(publisher) else {
            return;
        };
        me.received += 1;
        match seq.cmp(next) {
            std::cmp::Ordering::Equal => *next += 1,
            std::cmp::Ordering::Greater => {
                me.lost += seq - *next;
                *next = seq + 1;
            }
            std::cmp::Ordering::Less if seq + 1 == *next => me.duplicated += 1,
            std::cmp::Ordering::Less => me.out_of_order += 1,
        }
        if shared.record_latency.get() {
            let _ = shared
                .latency_us
                .borrow_mut()
                .record(now_us().saturating_sub(sent_us).max(1));
        }
    }
    shared.check_caught_up(index, now);
}

/// Event data is `p<publisher>s<seq>t<unix micros>` padded with `x`.
pub(crate) fn parse_payload(data: &[u8]) -> Option<(usize, u64, u64)> {
    let rest = data.strip_prefix(b"p")?;
    let (publisher, rest) = number(rest, b's')?;
    let (seq, rest) = number(rest, b't')?;
    let (sent, _) = number(rest, b'x')?;
    Some((usize::try_from(publisher).ok()?, seq, sent))
}

fn number(input: &[u8], terminator: u8) -> Option<(u64, &[u8])> {
    let end = input.iter().position(|&b| b == terminator).unwrap_or(input.len());
    let digits = std::str::from_utf8(&input[..end]).ok()?;
    Some((digits.parse().ok()?, input.get(end + 1..).unwrap_or_default()))
}

pub(crate) fn payload(publisher: usize, seq: u64, size: usize, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(out, "p{publisher}s{seq}t{}", now_us());
    while out.len() < size {
        out.push('x');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let mut data = String::new();
        payload(3, 41, 100, &mut data);
        assert_eq!(data.len(), 100);
        let (publisher, seq, sent) = parse_payload(data.as_bytes()).unwrap();
        assert_eq!((publisher, seq), (3, 41));
        assert!(sent > 0);
    }

    #[test]
    fn parser_dispatches_events_split_anywhere() {
        let wire = b": hi\n\nretry: 10\nid: 7\ndata: p0s1t5x\n\nid: 8\r\nevent: gap\r\ndata: {}\r\n\r\n";
        for split in 0..wire.len() {
            let mut parser = Parser::default();
            let mut seen = Vec::new();
            let mut pending = wire[..split].to_vec();
            let consumed = parser.feed(&pending, |e| {
                seen.push((e.id.map(<[u8]>::to_vec), e.gap, e.data.to_vec()))
            });
            pending.drain(..consumed);
            pending.extend_from_slice(&wire[split..]);
            parser.feed(&pending, |e| {
                seen.push((e.id.map(<[u8]>::to_vec), e.gap, e.data.to_vec()))
            });
            assert_eq!(
                seen,
                vec![
                    (Some(b"7".to_vec()), false, b"p0s1t5x".to_vec()),
                    (Some(b"8".to_vec()), true, b"{}".to_vec())
                ],
                "split at {split}"
            );
        }
    }
}
