//! Events as segments: one object per appended batch, under keys that sort by time.
//!
//! `events/<first at>-<a UUIDv7>-<last at>-<scope>` (times in µs, 20 digits; the scope is
//! the task id when every event of the batch is one task's, `none` when none has a task,
//! `many` otherwise), holding one JSON event per line. The event logger appends in batches
//! that grow with the load, so a busy worker writes one object for hundreds of events, not
//! one each (a local directory made a file per event, the largest share of its files). A
//! listing hands segments over by first time; a query reads only the segments that overlap
//! its time range (and, for one task, those that may hold its events) and merges their
//! events oldest first. Keys of one event per object, `events/<at>-<UUIDv7>-<task>`,
//! written by earlier releases, are read as segments of one event.
//!
//! Events are best effort, like every store's: a crash may lose the batch being written,
//! or leave a segment a purge was cutting twice, never a task.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use omniq_models::{TaskEvent, TaskId};
use omniq_storage::{
    BoxFuture, EventQuery, EventStore, StoreError, StoreResult, effective_purge_limit,
};

use crate::error::BACKEND;
use crate::objects::IN_FLIGHT;
use crate::{Objects, Stored};

const EVENTS: &str = "events";
/// The scope of a segment with events of several tasks.
const MANY: &str = "many";
/// The scope of a segment whose events have no task.
const NONE: &str = "none";

/// The event store on [`Objects`].
#[derive(Debug, Clone)]
pub struct FileEventStore {
    objects: Arc<dyn Objects>,
}

fn micros(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_micros()).unwrap_or(0)
}

fn task_text(event: &TaskEvent) -> String {
    event
        .task_id
        .map_or_else(|| NONE.to_owned(), |id| id.to_string())
}

/// The key of a segment holding `events` (not empty).
fn segment_key(events: &[TaskEvent]) -> String {
    let first = events.iter().map(|e| micros(e.at)).min().unwrap_or(0);
    let last = events.iter().map(|e| micros(e.at)).max().unwrap_or(first);
    let scope = match events.split_first() {
        Some((head, tail)) if tail.iter().all(|e| e.task_id == head.task_id) => task_text(head),
        _ => MANY.to_owned(),
    };
    // A fresh UUIDv7: ordered within this process, unique across processes.
    let nonce = TaskId::new();
    format!("{EVENTS}/{first:020}-{nonce}-{last:020}-{scope}")
}

/// What a segment's key says about it.
#[derive(Debug, PartialEq, Eq)]
struct Segment<'a> {
    /// Its earliest and latest event times, in µs.
    first: u64,
    last: u64,
    /// A task id, [`NONE`] or [`MANY`].
    scope: &'a str,
}

impl Segment<'_> {
    fn parse(key: &str) -> Option<Segment<'_>> {
        let name = key.strip_prefix(EVENTS)?.strip_prefix('/')?;
        let (first, rest) = name.split_once('-')?;
        let first = first.parse().ok()?;
        // The nonce is a hyphenated UUID (five groups); what follows it is either
        // `<last>-<scope>` or, in an earlier release's key of one event, the task.
        let tail = rest.splitn(6, '-').nth(5)?;
        let (last, scope) = match tail.split_once('-') {
            Some((last, scope)) if last.len() == 20 => (last.parse().ok()?, scope),
            _ => (first, tail),
        };
        Some(Segment { first, last, scope })
    }

    /// Whether this segment may hold events `query` matches.
    fn may_match(&self, since: Option<u64>, until: Option<u64>, task: Option<&str>) -> bool {
        since.is_none_or(|since| self.last >= since)
            // Keys hold microseconds, events may hold finer times: a key at `until`'s
            // microsecond may still be before it (`matches` decides).
            && until.is_none_or(|until| self.first <= until)
            && task.is_none_or(|task| self.scope == task || self.scope == MANY)
    }
}

/// A segment's lines, read.
#[derive(Debug, Default)]
struct Lines {
    /// The events this release can read, in the order appended.
    events: Vec<TaskEvent>,
    /// Lines of JSON that are not events of this release (a kind a newer release added):
    /// kept as they are when a purge rewrites the segment, for the release that reads them.
    foreign: Vec<Vec<u8>>,
}

/// A segment's bytes, line by line; a line that is not JSON at all is garbage, left out as
/// a corrupt row would be.
fn decode(bytes: &[u8]) -> Lines {
    let mut lines = Lines::default();
    for line in bytes.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
        match serde_json::from_slice::<TaskEvent>(line) {
            // A kind a newer release added reads as `Other`: kept as written, never
            // rewritten as `other`.
            Ok(event) if event.kind == omniq_models::TaskEventKind::Other => {
                lines.foreign.push(line.to_vec());
            }
            Ok(event) => lines.events.push(event),
            Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() => {
                lines.foreign.push(line.to_vec());
            }
            Err(_) => {}
        }
    }
    lines
}

fn encode(events: &[TaskEvent], foreign: &[Vec<u8>]) -> StoreResult<Bytes> {
    let mut bytes = Vec::new();
    for event in events {
        serde_json::to_writer(&mut bytes, event)
            .map_err(|err| StoreError::backend(BACKEND, err))?;
        bytes.push(b'\n');
    }
    for line in foreign {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    Ok(Bytes::from(bytes))
}

impl FileEventStore {
    /// Events in `objects`.
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        Self { objects }
    }

    /// Writes `events` as one new segment.
    async fn write_segment(&self, events: &[TaskEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        // A fresh nonce makes the key new: `None` (taken) cannot happen short of a clash
        // of UUIDv7s, and a lost reply that hid a success leaves the events written once.
        self.objects
            .create(&segment_key(events), encode(events, &[])?)
            .await?;
        Ok(())
    }

    async fn select(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let since = query.since.map(micros);
        let until = query.until.map(micros);
        let task = query.task_id.map(|id| id.to_string());
        let mut keys: Vec<(u64, String)> = self
            .objects
            .list(EVENTS)
            .await?
            .into_iter()
            .filter_map(|key| {
                let segment = Segment::parse(&key)?;
                segment
                    .may_match(since, until, task.as_deref())
                    .then_some((segment.first, key))
            })
            .collect();
        // By first time, then key: the order segments are merged in.
        keys.sort();
        let limit = query.effective_limit();
        let mut found: Vec<TaskEvent> = Vec::new();
        // A purge cut short (a crash, a lost reply) may leave an event in two segments.
        let mut seen = HashSet::new();
        let mut segments = stream::iter(keys)
            .map(|(first, key)| async move { (first, self.objects.get(&key).await) })
            .buffered(IN_FLIGHT);
        while let Some((first, read)) = segments.next().await {
            // Segments start in order: once `limit` events are found at or before this
            // segment's first time, no later segment has an earlier one.
            if found.len() >= limit {
                found.sort_by_key(|event| event.at);
                found.truncate(limit);
                if found.last().is_some_and(|event| micros(event.at) < first) {
                    break;
                }
            }
            // Purged between the listing and the read: gone, as it should be.
            let Some(stored) = read? else { continue };
            found.extend(
                decode(&stored.bytes)
                    .events
                    .into_iter()
                    .filter(|e| query.matches(e) && seen.insert(e.id)),
            );
        }
        // Stable: events of one time keep the order they were appended in.
        found.sort_by_key(|event| event.at);
        found.truncate(limit);
        Ok(found)
    }

    async fn purge_older(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let before_micros = micros(before);
        let mut keys: Vec<(u64, String)> = self
            .objects
            .list(EVENTS)
            .await?
            .into_iter()
            .filter_map(|key| {
                let segment = Segment::parse(&key)?;
                (segment.first < before_micros.saturating_add(1)).then_some((segment.first, key))
            })
            .collect();
        keys.sort();
        let mut left = effective_purge_limit(limit);
        let mut purged = 0_u64;
        for (_, key) in keys {
            if left == 0 {
                break;
            }
            let Some(stored) = self.objects.get(&key).await? else {
                continue;
            };
            let removed = self.cut(&key, &stored, before, left).await?;
            left -= removed;
            purged += u64::try_from(removed).unwrap_or(u64::MAX);
        }
        Ok(purged)
    }

    /// Removes at most `left` events older than `before` from the segment at `key`, oldest
    /// first: deletes it when none stays, or else writes what stays as a new segment and
    /// then deletes this one. Returns how many it removed (0 when another purge got there
    /// first, or the segment held nothing readable: an empty or garbage segment goes).
    async fn cut(
        &self,
        key: &str,
        stored: &Stored,
        before: DateTime<Utc>,
        left: usize,
    ) -> StoreResult<usize> {
        let Lines {
            mut events,
            foreign,
        } = decode(&stored.bytes);
        if events.is_empty() && foreign.is_empty() {
            // Nothing to keep: a delete's tombstone left behind, or garbage.
            self.objects.delete_if(key, &stored.version).await?;
            return Ok(0);
        }
        events.sort_by_key(|event| event.at);
        let old = events
            .iter()
            .take_while(|e| e.at < before)
            .count()
            .min(left);
        if old == 0 {
            return Ok(0);
        }
        let kept = events.split_off(old);
        // What stays is written before the segment goes: a crash in between leaves those
        // events twice (queries drop the second copy), never loses them.
        if !kept.is_empty() || !foreign.is_empty() {
            let remainder = match Segment::parse(key) {
                // Lines this release cannot read keep the segment's span and scope.
                Some(segment) if !foreign.is_empty() => {
                    let nonce = TaskId::new();
                    format!(
                        "{EVENTS}/{:020}-{nonce}-{:020}-{}",
                        segment.first, segment.last, segment.scope
                    )
                }
                _ => segment_key(&kept),
            };
            self.objects
                .create(&remainder, encode(&kept, &foreign)?)
                .await?;
        }
        // `false` when another purge got there first, or when our own delete landed but
        // its reply was lost: either way the remainder stays, as a copy at worst.
        Ok(if self.objects.delete_if(key, &stored.version).await? {
            old
        } else {
            0
        })
    }
}

impl EventStore for FileEventStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { self.write_segment(&events).await.map(drop) })
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        Box::pin(self.select(query))
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_older(before, limit))
    }
}

#[cfg(test)]
mod tests {
    use omniq_models::TaskEventKind;

    use super::*;

    #[test]
    fn a_key_names_its_times_and_scope() {
        let task = TaskId::new();
        let first = TaskEvent::for_task(TaskEventKind::Started, task, "t", "q");
        let mut second = first.clone();
        second.at = first.at + chrono::Duration::seconds(2);
        let task_text = task.to_string();
        let key = segment_key(&[second.clone(), first.clone()]);
        assert_eq!(
            Segment::parse(&key),
            Some(Segment {
                first: micros(first.at),
                last: micros(second.at),
                scope: task_text.as_str(),
            })
        );
        let other = TaskEvent::for_task(TaskEventKind::Started, TaskId::new(), "t", "q");
        let mixed = segment_key(&[first.clone(), other]);
        assert_eq!(Segment::parse(&mixed).map(|s| s.scope), Some(MANY));
        let mut loose = TaskEvent::new(TaskEventKind::Started);
        loose.at = first.at;
        assert_eq!(
            Segment::parse(&segment_key(&[loose])).map(|s| s.scope),
            Some(NONE)
        );
        assert_eq!(Segment::parse("events/garbage"), None);
    }

    #[test]
    fn an_earlier_release_key_of_one_event_reads_as_a_segment() {
        let task = TaskId::new();
        let key = format!("events/{:020}-{}-{task}", 1_234, TaskId::new());
        let task_text = task.to_string();
        assert_eq!(
            Segment::parse(&key),
            Some(Segment {
                first: 1_234,
                last: 1_234,
                scope: task_text.as_str(),
            })
        );
        // One JSON value without a newline: a segment of one line.
        let event = TaskEvent::for_task(TaskEventKind::Started, task, "t", "q");
        let bytes = serde_json::to_vec(&event).expect("json");
        assert_eq!(decode(&bytes).events, vec![event]);
    }

    #[test]
    fn a_segment_keeps_its_events_and_a_newer_release_lines_and_drops_garbage() {
        let event = TaskEvent::for_task(TaskEventKind::Started, TaskId::new(), "t", "q");
        let newer = br#"{"kind":"teleported","at":"2026-12-06T00:00:00Z"}"#.to_vec();
        // A whole event of a kind this release reads as `other`: kept as written too.
        let mut whole = serde_json::to_value(&event).expect("json");
        whole["kind"] = "teleported".into();
        let whole = serde_json::to_vec(&whole).expect("json");
        let foreign = [newer, whole];
        let mut bytes = encode(std::slice::from_ref(&event), &foreign)
            .expect("encode")
            .to_vec();
        bytes.extend_from_slice(b"{not json\n");
        bytes.extend_from_slice(&encode(std::slice::from_ref(&event), &[]).expect("encode"));
        let lines = decode(&bytes);
        assert_eq!(lines.events, vec![event.clone(), event]);
        assert_eq!(lines.foreign, foreign.to_vec());
    }
}
