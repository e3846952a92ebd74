//! SQS queue names: letters, digits, `-` and `_`, at most 80 characters, ending in `.fifo`
//! for a FIFO queue.

use omniq_storage::{StoreError, StoreResult};

/// The longest queue name SQS allows.
const MAX_NAME: usize = 80;

/// Names under one prefix: `<prefix>-q-<queue>` per OmniQ queue (other characters than
/// letters, digits and `-` written as `_` and two hex digits), `<prefix>-dead` for dead
/// letters, each with `.fifo` after it for FIFO queues. A task queue's name always holds
/// `-q-` after the prefix, so no OmniQ queue can take the dead letters' name.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
    suffix: &'static str,
}

impl Names {
    pub(crate) fn new(prefix: &str, fifo: bool) -> StoreResult<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(StoreError::Invalid(format!(
                "the SQS prefix {prefix:?} must be 1 to 32 letters, digits or `-`"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix: if fifo { ".fifo" } else { "" },
        })
    }

    /// The SQS queue holding OmniQ queue `queue`'s tasks.
    pub(crate) fn queue(&self, queue: &str) -> StoreResult<String> {
        omniq_storage::validate_queue_name(queue)?;
        let mut name = format!("{}-q-", self.prefix);
        for byte in queue.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("_{byte:02x}"));
            }
        }
        name.push_str(self.suffix);
        if name.len() > MAX_NAME {
            return Err(StoreError::Invalid(format!(
                "the queue name {queue:?} is too long for SQS: with the prefix it must fit \
                 in {MAX_NAME} characters"
            )));
        }
        Ok(name)
    }

    /// The queue of dead letters, of every OmniQ queue.
    pub(crate) fn dead(&self) -> String {
        format!("{}-dead{}", self.prefix, self.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_sqs_and_never_collide_with_the_dead_letters() {
        let names = Names::new("shop", false).expect("prefix");
        assert_eq!(names.queue("emails").expect("name"), "shop-q-emails");
        assert_eq!(names.queue("a.b_c").expect("name"), "shop-q-a_2eb_5fc");
        assert_eq!(names.dead(), "shop-dead");
        assert!(names.queue(&"x".repeat(80)).is_err());
        assert!(Names::new("no spaces", false).is_err());
        let fifo = Names::new("shop", true).expect("prefix");
        assert_eq!(fifo.queue("emails").expect("name"), "shop-q-emails.fifo");
        assert_eq!(fifo.dead(), "shop-dead.fifo");
        assert!(fifo.queue(&"x".repeat(70)).is_err());
        assert!(names.queue(&"x".repeat(70)).is_ok());
    }
}
