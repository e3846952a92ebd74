//! What a process remembers of its queues' ready markers from one claim to the next.
//!
//! A directory keeps its entries in no order, so the first page of a queue's ready
//! markers costs a read of all of them: with twenty thousand queued, a claim spent as long
//! listing as taking. A claim whose listing filled a page remembers it for
//! [`REMEMBERED_FOR`], and the claims after it take from what is left of it; markers this
//! process files are added in their place. A marker another process files ahead of the
//! page waits for the next listing: at most [`REMEMBERED_FOR`], and only while its queue
//! holds a page or more of ready tasks, which are taken in order anyway.
//!
//! Nothing here decides a claim: every key is taken by reading its task and replacing it
//! from the version read, so a remembered marker that another claimer took meanwhile
//! costs a read, never a second lease.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a listing's first page is taken from without listing again.
pub(super) const REMEMBERED_FOR: Duration = Duration::from_millis(100);

/// The first page of each queue's ready markers, as last listed by this process.
#[derive(Debug, Default)]
pub(super) struct ReadyPages {
    pages: Mutex<HashMap<String, Remembered>>,
    /// Stale markers being deleted in the background, left out of listings meanwhile.
    dropping: Mutex<HashSet<String>>,
}

#[derive(Debug)]
struct Remembered {
    /// The keys not yet gone through by a claim, in byte order.
    keys: Vec<String>,
    /// The listing's last key: a claim that wants more lists after it.
    last: String,
    listed: Instant,
}

/// A first page as remembered.
#[derive(Debug)]
pub(super) struct Page {
    /// The keys left of it, in byte order.
    pub(super) keys: Vec<String>,
    /// Where a listing goes on from.
    pub(super) after: String,
}

impl ReadyPages {
    /// The first page of the markers under `base`, if a listing filled one less than
    /// [`REMEMBERED_FOR`] ago and keys are left of it.
    pub(super) fn first_page(&self, base: &str) -> Option<Page> {
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        let remembered = pages.get(base)?;
        if remembered.keys.is_empty() || remembered.listed.elapsed() >= REMEMBERED_FOR {
            pages.remove(base);
            return None;
        }
        Some(Page {
            keys: remembered.keys.clone(),
            after: remembered.last.clone(),
        })
    }

    /// Remembers `keys`, a full first page of the markers under `base` just listed.
    pub(super) fn remember(&self, base: &str, keys: &[String]) {
        let Some(last) = keys.last() else {
            return;
        };
        // The page's last key, whatever the listing left out after it: a listing that
        // goes on from there meets those again, or finds them gone.
        self.pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                base.to_owned(),
                Remembered {
                    keys: keys.to_vec(),
                    last: last.clone(),
                    listed: Instant::now(),
                },
            );
    }

    /// Forgets `done` (in byte order), keys of `base` a claim went through.
    pub(super) fn forget(&self, base: &str, done: &[String]) {
        if done.is_empty() {
            return;
        }
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(remembered) = pages.get_mut(base) {
            remembered
                .keys
                .retain(|key| done.binary_search(key).is_err());
        }
    }

    /// Notes `keys` as being deleted.
    pub(super) fn dropping(&self, keys: &[String]) {
        self.dropping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(keys.iter().cloned());
    }

    /// Notes `keys` as deleted (or left, if their deletion failed).
    pub(super) fn dropped(&self, keys: &[String]) {
        let mut dropping = self.dropping.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            dropping.remove(key);
        }
    }

    /// Leaves the markers being deleted out of `listed`.
    pub(super) fn leave_out_dropping(&self, listed: &mut Vec<String>) {
        let dropping = self.dropping.lock().unwrap_or_else(PoisonError::into_inner);
        if !dropping.is_empty() {
            listed.retain(|key| !dropping.contains(key));
        }
    }

    /// Adds `key`, a marker this process filed under `base`, if it falls within the
    /// remembered page (one after it is found by the listing that goes on from there).
    pub(super) fn filed(&self, base: &str, key: &str) {
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(remembered) = pages.get_mut(base)
            && key < remembered.last.as_str()
            && let Err(at) = remembered.keys.binary_search_by(|k| k.as_str().cmp(key))
        {
            remembered.keys.insert(at, key.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_page_is_what_is_left_of_the_listing_plus_what_was_filed_within_it() {
        let pages = ReadyPages::default();
        assert!(pages.first_page("q").is_none());
        pages.remember("q", &keys(&["b", "d", "f", "h"]));
        pages.forget("q", &keys(&["b", "f"]));
        pages.filed("q", "c");
        pages.filed("q", "d");
        pages.filed("q", "z");
        pages.filed("other", "a");
        let page = pages.first_page("q").expect("remembered");
        assert_eq!(page.keys, keys(&["c", "d", "h"]));
        assert_eq!(page.after, "h");
        assert!(pages.first_page("other").is_none());
        pages.forget("q", &keys(&["c", "d", "h"]));
        assert!(
            pages.first_page("q").is_none(),
            "nothing left: listed again"
        );
    }

    #[test]
    fn a_page_is_forgotten_once_it_is_old() {
        let pages = ReadyPages::default();
        pages.remember("q", &keys(&["a"]));
        if let Some(remembered) = pages.pages.lock().expect("lock").get_mut("q") {
            remembered.listed = remembered
                .listed
                .checked_sub(REMEMBERED_FOR)
                .expect("a monotonic clock past its first 100 ms");
        }
        assert!(pages.first_page("q").is_none());
    }
}
