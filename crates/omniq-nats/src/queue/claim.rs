//! Claims, and the promotion of tasks whose time has come.

use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use omniq_models::{LeaseToken, TaskState};
use omniq_storage::{DequeueRequest, Lease, StoreResult};

use super::NatsTaskQueue;
use super::cas;
use super::index::{self, Entry};
use super::maintenance::Keep;
use crate::error::nats_error;
use crate::scan::{from_server_time, scan};

/// A ready message naming a task that does not exist is dropped once it is this old: its
/// enqueue published it and then failed before the task was written (younger, the write
/// may still be on its way).
const ORPHAN_AGE: TimeDelta = TimeDelta::minutes(1);

/// How long a claim waits for messages the stream holds but its consumer did not hand
/// out at once (see [`NatsTaskQueue::claim_from`]).
const SIGNAL_WAIT: Duration = Duration::from_millis(100);

/// Fetch rounds per ready subject and claim, at most.
const ROUNDS_PER_SUBJECT: usize = 64;

/// What one fetch from a ready subject gave.
struct Round {
    leases: Vec<Lease>,
    fetched: usize,
    /// Messages of tasks this worker does not run, held (unacknowledged) until the claim
    /// ends, so that the next fetch reaches past them; then handed back at once.
    passed_over: Vec<async_nats::jetstream::Message>,
    /// Messages of tasks still being written, handed back for a while.
    not_yet: usize,
}

/// What a claim made of one ready message.
enum Verdict {
    Leased(Box<Lease>),
    /// Not this worker's to run (a name it does not know).
    LeftForOthers,
    /// Not yet readable (enqueue still writing it): back to the stream in a while.
    NotYet,
    /// Nothing to run: the task is gone, running, finished, or not due.
    Stale,
}

/// What to do with the ready message of a task a claim cannot take. `changing`: the change
/// the message files the task for is not written yet.
fn unclaimable(task: &super::stored::Stored, now: DateTime<Utc>, changing: bool) -> Verdict {
    let record = &task.record;
    let live = record.spec.expires_at.is_none_or(|at| at > now);
    if changing || (record.state == TaskState::Queued && live) {
        // Queued, but due a moment later by this clock than by the one that queued it:
        // the message is the only thing that finds it, so it comes back.
        Verdict::NotYet
    } else {
        // Gone, running, finished, or due later (its delayed entry finds it then), or
        // expired (its expiry entry does).
        Verdict::Stale
    }
}

/// Tasks due later a claim makes ready, at most.
const PROMOTED_PER_CLAIM: usize = 256;

/// Ready messages a claim passes over per subject, at most (tasks of names this worker
/// does not run, in a rolling deploy): a claim never walks a huge backlog.
const SKIP_LIMIT: usize = 1_000;

impl NatsTaskQueue {
    pub(super) async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        let now = self.clock.now();
        let server_now = self.server_now().await?;
        let deadline = server_now + TimeDelta::from_std(request.lease).unwrap_or(TimeDelta::MAX);
        let token = LeaseToken::new();
        let mut leases = Vec::new();
        for queue in &request.queues {
            if leases.len() >= request.limit {
                break;
            }
            self.promote_due(queue, now).await?;
            let mut subjects: Vec<(String, usize)> = Vec::new();
            let mut info = self
                .backend
                .inner
                .ready
                .info_with_subjects(self.subjects().ready_of_queue(queue))
                .await
                .map_err(nats_error)?;
            while let Some(subject) = info.next().await {
                let (subject, count) = subject.map_err(nats_error)?;
                if count > 0 {
                    subjects.push((subject, count));
                }
            }
            index::by_priority(&mut subjects, |(subject, _)| subject);
            for (subject, stored) in subjects {
                let claimed = self
                    .claim_subject(
                        &subject,
                        stored,
                        &request,
                        request.limit - leases.len(),
                        token,
                        deadline,
                    )
                    .await;
                match claimed {
                    Ok(claimed) => leases.extend(claimed),
                    // Tasks leased already are running now: hand them to the worker, or
                    // they would wait out their lease. The next claim meets the error.
                    Err(err) if !leases.is_empty() => {
                        tracing::warn!(%err, "a claim stopped early; returning what it took");
                        return Ok(leases);
                    }
                    Err(err) => return Err(err),
                }
                if leases.len() >= request.limit {
                    break;
                }
            }
        }
        Ok(leases)
    }

    /// Claims up to `wanted` tasks from one ready subject that holds `stored` messages,
    /// fetching again while the fetches come back full, and hands back what it passed over.
    async fn claim_subject(
        &self,
        subject: &str,
        stored: usize,
        request: &DequeueRequest,
        wanted: usize,
        token: LeaseToken,
        deadline: DateTime<Utc>,
    ) -> StoreResult<Vec<Lease>> {
        let mut leases = Vec::new();
        let mut passed_over = Vec::new();
        let mut outcome = Ok(());
        for round_number in 0..ROUNDS_PER_SUBJECT {
            let left = wanted - leases.len();
            if left == 0 || passed_over.len() >= SKIP_LIMIT {
                break;
            }
            let asked = left.min(SKIP_LIMIT - passed_over.len()).max(1);
            // Only the first round's count is fresh.
            let expected = if round_number == 0 {
                stored.min(asked)
            } else {
                0
            };
            let round = match self
                .claim_from(subject, asked, expected, request, token, deadline)
                .await
            {
                Ok(round) => round,
                Err(err) => {
                    outcome = Err(err);
                    break;
                }
            };
            leases.extend(round.leases);
            passed_over.extend(round.passed_over);
            if round.fetched < asked || round.not_yet == round.fetched {
                break;
            }
        }
        // Back to the stream at once, for the workers that run them.
        for message in passed_over {
            if let Err(err) = message.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(%err, "cannot hand back a ready message; it comes back after its ack wait");
            }
        }
        outcome.map(|()| leases)
    }

    /// One fetch from a ready subject's consumer, each message claimed at once. `expected`:
    /// how many of the `wanted` messages the stream said it holds for the subject.
    async fn claim_from(
        &self,
        subject: &str,
        wanted: usize,
        expected: usize,
        request: &DequeueRequest,
        token: LeaseToken,
        deadline: DateTime<Utc>,
    ) -> StoreResult<Round> {
        let consumer = self.consumer(subject).await?;
        let mut messages = self
            .fetch(
                subject,
                consumer.fetch().max_messages(wanted).messages().await,
            )
            .await?;
        if messages.is_empty() && expected > 0 {
            // The stream holds messages the consumer did not hand out. The server tells
            // its consumers of a new message after it acknowledged the publish, so a claim
            // right behind a publish can find the consumer not told yet; or another
            // claimer holds them for a moment. A request that waits is served as soon as
            // the consumer learns of them, bounded in case they stay held.
            let waiting = consumer
                .batch()
                .max_messages(expected)
                .expires(SIGNAL_WAIT)
                .messages()
                .await;
            messages = self.fetch(subject, waiting).await?;
        }
        let fetched = messages.len();
        let verdicts = futures_util::future::join_all(messages.iter().map(|message| async move {
            let verdict = self
                .claim_message(&message.payload, message, request, token, deadline)
                .await;
            // The message's fate follows the verdict: acknowledged (gone) once the task is
            // taken or needs nothing more; handed back otherwise. An answer that is lost
            // only brings the message back after the consumer's ack wait, to be judged
            // again then.
            let answer = match &verdict {
                Ok(Verdict::Leased(_) | Verdict::Stale) => Some(AckKind::Ack),
                Ok(Verdict::LeftForOthers) => None,
                // The change in flight lands within milliseconds; an error may last longer.
                Ok(Verdict::NotYet) => Some(AckKind::Nak(Some(Duration::from_millis(50)))),
                Err(_) => Some(AckKind::Nak(Some(Duration::from_secs(1)))),
            };
            if let Some(answer) = answer
                && let Err(err) = message.ack_with(answer).await
            {
                tracing::debug!(%err, "cannot answer a ready message; it comes back after its ack wait");
            }
            verdict
        }))
        .await;
        let mut round = Round {
            leases: Vec::new(),
            fetched,
            passed_over: Vec::new(),
            not_yet: 0,
        };
        let mut failure = None;
        for (verdict, message) in verdicts.into_iter().zip(messages) {
            match verdict {
                Ok(Verdict::Leased(lease)) => round.leases.push(*lease),
                Ok(Verdict::LeftForOthers) => round.passed_over.push(message),
                Ok(Verdict::NotYet) => round.not_yet += 1,
                Ok(Verdict::Stale) => {}
                Err(err) => failure = Some(err),
            }
        }
        match failure {
            // Leases taken in this round are returned all the same: their tasks are
            // running now, and the next claim would not see them.
            Some(err) if round.leases.is_empty() => {
                for message in round.passed_over {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                Err(err)
            }
            _ => Ok(round),
        }
    }

    /// The messages of a fetch, to its end.
    async fn fetch(
        &self,
        subject: &str,
        fetched: Result<
            async_nats::jetstream::consumer::pull::Batch,
            async_nats::jetstream::consumer::pull::BatchError,
        >,
    ) -> StoreResult<Vec<async_nats::jetstream::Message>> {
        let mut batch = match fetched {
            Ok(batch) => batch,
            Err(err) => {
                // The consumer may be gone (a stream re-created, a cluster that lost it):
                // the next claim makes it again.
                self.forget_consumer(subject);
                return Err(omniq_storage::StoreError::unavailable(
                    crate::error::BACKEND,
                    err,
                ));
            }
        };
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|err| {
                omniq_storage::StoreError::unavailable(crate::error::BACKEND, err)
            })?);
        }
        Ok(messages)
    }

    async fn claim_message(
        &self,
        payload: &[u8],
        message: &async_nats::jetstream::Message,
        request: &DequeueRequest,
        token: LeaseToken,
        deadline: DateTime<Utc>,
    ) -> StoreResult<Verdict> {
        let Ok(entry) = serde_json::from_slice::<Entry>(payload) else {
            tracing::warn!("a ready message cannot be read; dropped");
            return Ok(Verdict::Stale);
        };
        let current = cas::read_to_claim(self.tasks(), entry.id).await?;
        // Read after the task: the message may have been published after the claim began,
        // for a task due a moment ago.
        let now = self.clock.now();
        // Judged on the server's clock, the one that stamped the message.
        let server_now = self.server_now().await?;
        let young = message
            .info()
            .is_ok_and(|info| server_now - from_server_time(info.published) < ORPHAN_AGE);
        let revision = current.as_ref().map_or(0, |c| c.revision);
        let Some(current) = current else {
            return Ok(if young && entry.after == Some(0) {
                // Its enqueue is still writing it.
                Verdict::NotYet
            } else {
                Verdict::Stale
            });
        };
        if !current.task.claimable(now) {
            return Ok(unclaimable(
                &current.task,
                now,
                young && entry.after == Some(revision),
            ));
        }
        let spec = &current.task.record.spec;
        if !request.takes(&spec.name, spec.run_at, now) {
            return Ok(Verdict::LeftForOthers);
        }
        // The lease's index entry first: see the module docs.
        let lease_entry = Entry::lease(entry.id, token);
        self.publish(self.subjects().lease(deadline), &lease_entry)
            .await?;
        let worker = &request.worker_id;
        let verdict = cas::update(self.tasks(), entry.id, |task| {
            if !task.claimable(now) {
                return (unclaimable(task, now, false), false);
            }
            if !request.takes(&task.record.spec.name, task.record.spec.run_at, now) {
                return (Verdict::LeftForOthers, false);
            }
            task.claim(token, worker, now, deadline);
            let lease = Lease::new(
                task.record.spec.clone(),
                token,
                task.record.attempts,
                deadline,
            );
            (Verdict::Leased(Box::new(lease)), true)
        })
        .await?;
        Ok(verdict.unwrap_or(Verdict::Stale))
    }

    /// Makes the tasks of `queue` whose run_at has come ready: reads the delayed buckets
    /// that are due, files each due task in the ready stream, marks it queued, and drops
    /// its delayed entry.
    pub(super) async fn promote_due(&self, queue: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let server_now = self.server_now().await?;
        let index_stream = &self.backend.inner.index;
        let mut due_subjects = Vec::new();
        let mut info = index_stream
            .info_with_subjects(self.subjects().delayed_of_queue(queue))
            .await
            .map_err(nats_error)?;
        while let Some(subject) = info.next().await {
            let (subject, count) = subject.map_err(nats_error)?;
            if count > 0 && index::bucket_start(&subject, false).is_some_and(|s| s <= now) {
                due_subjects.push(subject);
            }
        }
        // Bounded per claim, a chunk judged at once, each chunk's entries removed before
        // the next: a claim never walks a bucket of a hundred thousand tasks due at midnight
        // in one go, and what it did is kept if it is cut off.
        let mut budget = PROMOTED_PER_CLAIM;
        for subject in due_subjects {
            if budget == 0 {
                break;
            }
            let mut entries = Vec::new();
            scan(
                &self.backend.inner.client,
                index_stream,
                subject.clone(),
                DeliverPolicy::All,
                false,
                |message| {
                    let entry = serde_json::from_slice::<Entry>(&message.payload);
                    entries.push((message.seq, from_server_time(message.published), entry));
                    if entries.len() >= budget {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await?;
            budget -= entries.len();
            let read_to_end = budget > 0;
            for chunk in entries.chunks(32) {
                let judged =
                    futures_util::future::join_all(chunk.iter().map(|(seq, published, entry)| {
                        let subject = &subject;
                        async move {
                            let done = match entry {
                                Ok(entry) => {
                                    let young = server_now - *published < ORPHAN_AGE;
                                    self.promote_one(subject, entry.clone(), young, now).await?
                                }
                                Err(_) => true,
                            };
                            StoreResult::Ok((*seq, if done { Keep::Drop } else { Keep::Keep }))
                        }
                    }))
                    .await;
                let verdicts: Vec<(u64, Keep)> = judged.into_iter().collect::<StoreResult<_>>()?;
                self.finish_bucket(
                    &subject,
                    &verdicts,
                    read_to_end && chunk.len() == entries.len(),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Promotes one task if it is due. Returns whether its delayed entry is done with.
    async fn promote_one(
        &self,
        subject: &str,
        entry: Entry,
        young: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let current = cas::read(self.tasks(), entry.id).await?;
        if young && entry.after == Some(current.as_ref().map_or(0, |c| c.revision)) {
            // The change this entry files the task for is not written yet.
            return Ok(false);
        }
        let Some(current) = current else {
            return Ok(true);
        };
        let record = &current.task.record;
        if record.state != TaskState::Scheduled {
            return Ok(true);
        }
        if record.spec.run_at > now {
            // Another entry files the task under its own run_at's bucket when this one
            // is older (the task was rescheduled): this one is done with.
            let own_bucket = self
                .subjects()
                .delayed(&record.spec.queue, record.spec.run_at);
            return Ok(own_bucket != subject);
        }
        self.update_filed(entry.id, |task| {
            if task.record.state == TaskState::Scheduled && task.record.spec.run_at <= now {
                task.record.state = TaskState::Queued;
                ((), true)
            } else {
                ((), false)
            }
        })
        .await?;
        Ok(true)
    }
}
