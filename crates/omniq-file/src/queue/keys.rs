//! Where the queue keeps each object, and what the names of its markers say.
//!
//! - `tasks/{id}`: the task ([`KvTask`](omniq_storage::kv_task::KvTask)), replaced only
//!   from the version read.
//! - `ready/{queue}/{rank}/{run_at}-{id}-{write}`: a queued or scheduled task, listed by a
//!   claim in the order it takes them (highest priority first, then due time, then id,
//!   which is time-ordered: enqueue order), without reading any task.
//! - `leases/{id}.{token}`: a running task, listed by recovery; its body names the write
//!   that claims the task, and when it was written (see [`lease_body`]).
//! - `expiry/{expires_at}-{id}`: a task with a TTL, listed by expiry in time order.
//! - `blocked/{id}`: a task waiting for its parents, listed by the sweep that settles
//!   what a killed process left blocked.
//! - `unique/{key}`: who holds a unique key.
//! - `settings/paused-queues`: the paused queues' names (JSON).
//! - `limiters/{base32 of the key}.l`: a limiter's state, replaced only from the version read.
//!
//! A marker is always written before the change of the task it files (and names the
//! task's write it files, `write`): a process killed in between leaves a marker that a
//! reader finds ahead of its task (and leaves alone for a while), never a task that no
//! marker finds.

use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskId};
use uuid::Uuid;

pub(crate) const TASKS: &str = "tasks";
pub(crate) const READY: &str = "ready";
pub(crate) const LEASES: &str = "leases";
pub(crate) const EXPIRY: &str = "expiry";
pub(crate) const BLOCKED: &str = "blocked";
pub(crate) const UNIQUE: &str = "unique";
pub(crate) const LIMITERS: &str = "limiters";

pub(crate) fn task(id: TaskId) -> String {
    format!("{TASKS}/{id}")
}

/// The id a task key names.
pub(crate) fn task_id_of(key: &str) -> Option<TaskId> {
    key.strip_prefix("tasks/")?.parse().ok()
}

/// A queue's name as one key segment: hex, so that any name is a valid key, and
/// shortened with a hash when long.
pub(crate) fn queue_segment(queue: &str) -> String {
    let bytes = queue.as_bytes();
    if bytes.len() <= 100 {
        hex(bytes)
    } else {
        format!("{}.{:016x}", hex(&bytes[..64]), fnv1a(bytes))
    }
}

pub(crate) fn ready_of_queue(queue: &str) -> String {
    format!("{READY}/{}", queue_segment(queue))
}

/// The queue's directory of a ready marker's key (`ready/{queue}`); `None` for any other.
pub(crate) fn ready_base_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ready/")?;
    let queue = rest.split('/').next()?;
    key.get(..READY.len() + 1 + queue.len())
}

/// Higher priorities sort first.
fn rank(priority: i32) -> String {
    let ordered = (priority as u32) ^ 0x8000_0000;
    format!("{:08x}", u32::MAX - ordered)
}

fn micros(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_micros()).unwrap_or(0)
}

/// The ready marker of queued or scheduled `task`, naming its write `write`.
pub(crate) fn ready_of_task(task: &omniq_storage::kv_task::KvTask, write: u64) -> String {
    let spec = &task.record.spec;
    ready(&spec.queue, spec.priority, spec.run_at, spec.id, write)
}

/// A ready marker, as its key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadyMarker {
    pub(crate) key: String,
    pub(crate) id: TaskId,
    pub(crate) run_at_micros: u64,
    pub(crate) priority_rank: String,
    pub(crate) write: u64,
}

pub(crate) fn ready(
    queue: &str,
    priority: i32,
    run_at: DateTime<Utc>,
    id: TaskId,
    write: u64,
) -> String {
    format!(
        "{}/{}/{:020}-{}-{write}",
        ready_of_queue(queue),
        rank(priority),
        micros(run_at),
        id.as_uuid().simple()
    )
}

impl ReadyMarker {
    pub(crate) fn parse(key: &str) -> Option<Self> {
        let mut segments = key.rsplitn(3, '/');
        let name = segments.next()?;
        let priority_rank = segments.next()?.to_owned();
        // `{run_at}-{id}-{write}`, and `-{nonce}` on a marker written again.
        let mut parts = name.split('-');
        let run_at_micros = parts.next()?.parse().ok()?;
        let id = TaskId::from_uuid(Uuid::try_parse(parts.next()?).ok()?);
        let write = parts.next()?.parse().ok()?;
        Some(Self {
            key: key.to_owned(),
            id,
            run_at_micros,
            priority_rank,
            write,
        })
    }

    /// Whether the marker files `task` as it is now: ready, due when the marker says, at
    /// the write it names or a later one that changed something else (a child registered,
    /// a cancel requested). A marker of an earlier filing whose fields came back (a task
    /// released) is a second way to the same task, harmless: claims are exclusive.
    pub(crate) fn files(&self, task: &omniq_storage::kv_task::KvTask) -> bool {
        let spec = &task.record.spec;
        task.writes >= self.write
            && matches!(
                task.record.state,
                omniq_models::TaskState::Queued | omniq_models::TaskState::Scheduled
            )
            && micros(spec.run_at) == self.run_at_micros
            && rank(spec.priority) == self.priority_rank
    }

    /// A key after every marker of this one's queue and priority, before the next
    /// priority's: where a listing goes on past the tasks of a priority due later.
    pub(crate) fn rank_end(&self) -> String {
        let directory = self.key.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{directory}/z")
    }

    pub(crate) fn due_by(&self, now: DateTime<Utc>) -> bool {
        self.run_at_micros <= micros(now)
    }
}

/// A lease marker, as its key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseMarker {
    pub(crate) key: String,
    pub(crate) id: TaskId,
    pub(crate) token: LeaseToken,
}

pub(crate) fn lease(id: TaskId, token: LeaseToken) -> String {
    format!(
        "{LEASES}/{}.{}",
        id.as_uuid().simple(),
        token.as_uuid().simple()
    )
}

impl LeaseMarker {
    pub(crate) fn parse(key: &str) -> Option<Self> {
        // `{id}.{token}`, and `.{nonce}` on a marker written again.
        let mut parts = key.strip_prefix("leases/")?.split('.');
        let id = TaskId::from_uuid(Uuid::try_parse(parts.next()?).ok()?);
        let token = LeaseToken::from_uuid(Uuid::try_parse(parts.next()?).ok()?);
        Some(Self {
            key: key.to_owned(),
            id,
            token,
        })
    }
}

/// A lease marker's body, for the claims (token, write) whose markers share it (the lease
/// markers a process writes together are one file on a directory): `{write} {at}` for
/// one claim, the write that claims its task and when the marker was written;
/// `{highest write} {token}:{write} … {at}` for several, each claim's write by its token.
///
/// The first word and the last keep the meaning they had in an earlier release, which
/// reads no more: it takes the highest write of the batch for its claim's, never a lower
/// one, and so never takes a claim still on its way for one that is done.
pub(crate) fn lease_body(now: DateTime<Utc>, claims: &[(LeaseToken, u64)]) -> bytes::Bytes {
    let highest = claims.iter().map(|(_, write)| *write).max().unwrap_or(0);
    let mut body = highest.to_string();
    if claims.len() > 1 {
        for (token, write) in claims {
            body.push_str(&format!(" {}:{write}", token.as_uuid().simple()));
        }
    }
    body.push_str(&format!(" {}", now.timestamp_micros()));
    bytes::Bytes::from(body)
}

/// The write a lease marker's body names for the claim by `token`, and when the marker
/// was written. A body that names no write for it (one claim's, or an earlier
/// release's), or one it cannot read, gives its first, as an earlier release reads every
/// body.
pub(crate) fn read_lease_body(bytes: &[u8], token: LeaseToken) -> Option<(u64, DateTime<Utc>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (highest, rest) = text.split_once(' ')?;
    let at = read_stamp(rest.as_bytes())?;
    let token = token.as_uuid().simple().to_string();
    let named = rest
        .split(' ')
        .find_map(|claim| claim.strip_prefix(token.as_str())?.strip_prefix(':'));
    // A damaged word of its own claim reads as the highest too: never a lower write.
    let write = named
        .and_then(|write| write.parse().ok())
        .or_else(|| highest.parse().ok())?;
    Some((write, at))
}

pub(crate) fn expiry(at: DateTime<Utc>, id: TaskId) -> String {
    format!("{EXPIRY}/{:020}-{}", micros(at), id.as_uuid().simple())
}

/// An expiry marker's time and task.
pub(crate) fn parse_expiry(key: &str) -> Option<(u64, TaskId)> {
    // `{at}-{id}`, and `-{nonce}` on a marker written again.
    let mut parts = key.strip_prefix("expiry/")?.split('-');
    let at = parts.next()?.parse().ok()?;
    Some((at, TaskId::from_uuid(Uuid::try_parse(parts.next()?).ok()?)))
}

/// An expiry marker's key without the nonce of a marker written again.
pub(crate) fn expiry_key_of(key: &str) -> String {
    let mut parts = key.splitn(3, '-');
    match (parts.next(), parts.next()) {
        (Some(at), Some(id)) => format!("{at}-{id}"),
        _ => key.to_owned(),
    }
}

pub(crate) fn expiry_due_by(at_micros: u64, now: DateTime<Utc>) -> bool {
    at_micros <= micros(now)
}

pub(crate) fn blocked(id: TaskId) -> String {
    format!("{BLOCKED}/{}", id.as_uuid().simple())
}

pub(crate) fn parse_blocked(key: &str) -> Option<TaskId> {
    // `{id}`, and `-{nonce}` on a marker written again.
    let id = key.strip_prefix("blocked/")?.split('-').next()?;
    Some(TaskId::from_uuid(Uuid::try_parse(id).ok()?))
}

/// Another key for the marker at `key`, filing the same thing: a marker written again
/// must not be one a reader may be deleting as an orphan at that moment.
pub(crate) fn with_nonce(key: &str) -> String {
    let nonce = Uuid::new_v4().simple();
    if key.starts_with("leases/") {
        format!("{key}.{nonce}")
    } else {
        format!("{key}-{nonce}")
    }
}

pub(crate) fn unique(key: &str) -> String {
    format!("{UNIQUE}/{}", queue_segment(key))
}

/// The client time a marker's body holds: when it was written.
pub(crate) fn stamp(now: DateTime<Utc>) -> bytes::Bytes {
    bytes::Bytes::from(now.timestamp_micros().to_string())
}

/// When a marker was written: its body's last word (a lease marker's body names writes
/// first).
pub(crate) fn read_stamp(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let micros: i64 = text.rsplit(' ').next()?.parse().ok()?;
    DateTime::from_timestamp_micros(micros)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_sort_by_priority_then_time() {
        let now = Utc::now();
        let id = TaskId::new();
        let high = ready("q", 10, now, id, 1);
        let low = ready("q", -3, now - chrono::TimeDelta::hours(1), id, 1);
        let zero = ready("q", 0, now, id, 1);
        let mut keys = vec![low.clone(), zero.clone(), high.clone()];
        keys.sort();
        assert_eq!(keys, vec![high.clone(), zero, low]);
        let parsed = ReadyMarker::parse(&high).expect("parses");
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.write, 1);
        assert!(crate::objects::valid_key(&high));
    }

    #[test]
    fn a_ready_markers_queue_directory_is_its_first_two_segments() {
        let key = ready("q", 1, Utc::now(), TaskId::new(), 2);
        assert_eq!(ready_base_of(&key), Some(ready_of_queue("q").as_str()));
        assert_eq!(ready_base_of("leases/abc.def"), None);
    }

    #[test]
    fn lease_and_expiry_markers_parse_back() {
        let id = TaskId::new();
        let token = LeaseToken::new();
        let key = lease(id, token);
        let parsed = LeaseMarker::parse(&key).expect("parses");
        assert_eq!((parsed.id, parsed.token), (id, token));
        let now = Utc::now();
        let other = LeaseToken::new();
        let body = lease_body(now, &[(other, 9), (token, 7)]);
        let (write, at) = read_lease_body(&body, token).expect("parses");
        assert_eq!(write, 7);
        assert_eq!(at.timestamp_micros(), now.timestamp_micros());
        assert_eq!(
            read_lease_body(&body, other).map(|(write, _)| write),
            Some(9)
        );
        // A claim it does not name gets the highest write, as an earlier release reads
        // every body: `{write} {at}`, words between ignored.
        assert_eq!(
            read_lease_body(&body, LeaseToken::new()).map(|(write, _)| write),
            Some(9)
        );
        let text = std::str::from_utf8(&body).expect("text");
        let (first, rest) = text.split_once(' ').expect("two words");
        assert_eq!(first, "9");
        assert_eq!(read_stamp(rest.as_bytes()), Some(at));
        // One claim's body is an earlier release's: its write, then the time.
        let alone = lease_body(now, &[(token, 4)]);
        assert_eq!(alone, format!("4 {}", now.timestamp_micros()));
        let (write, _) = read_lease_body(&alone, LeaseToken::new()).expect("parses");
        assert_eq!(write, 4);
        let damaged = format!(
            "8 {}:x {}",
            token.as_uuid().simple(),
            now.timestamp_micros()
        );
        let (write, _) = read_lease_body(damaged.as_bytes(), token).expect("parses");
        assert_eq!(write, 8, "a damaged write of its own reads as the highest");
        let at = Utc::now();
        let (micros_at, of) = parse_expiry(&expiry(at, id)).expect("parses");
        assert_eq!(of, id);
        assert!(expiry_due_by(micros_at, at));
        assert_eq!(parse_blocked(&blocked(id)), Some(id));
    }

    #[test]
    fn markers_written_again_parse_as_the_first() {
        let id = TaskId::new();
        let token = LeaseToken::new();
        let now = Utc::now();
        let ready_key = ready("q", 1, now, id, 3);
        let again = ReadyMarker::parse(&with_nonce(&ready_key)).expect("parses");
        assert_eq!((again.id, again.write), (id, 3));
        let lease_again = LeaseMarker::parse(&with_nonce(&lease(id, token))).expect("parses");
        assert_eq!((lease_again.id, lease_again.token), (id, token));
        assert_eq!(parse_blocked(&with_nonce(&blocked(id))), Some(id));
        assert_eq!(
            parse_expiry(&with_nonce(&expiry(now, id))).map(|(_, of)| of),
            Some(id)
        );
        for key in [
            with_nonce(&ready_key),
            with_nonce(&lease(id, token)),
            with_nonce(&blocked(id)),
            with_nonce(&expiry(now, id)),
        ] {
            assert!(crate::objects::valid_key(&key), "{key}");
        }
        let stamp =
            read_stamp(&lease_body(now, &[(token, 5), (LeaseToken::new(), 6)])).expect("a stamp");
        assert_eq!(stamp.timestamp_micros(), now.timestamp_micros());
    }

    #[test]
    fn long_queue_names_stay_one_segment() {
        let name = "q".repeat(1_000);
        let segment = queue_segment(&name);
        assert!(segment.len() < 255);
        assert_ne!(segment, queue_segment(&"q".repeat(999)));
    }
}
