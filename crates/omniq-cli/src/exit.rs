//! Exit codes scripts can act on.

use std::fmt;

/// A store or configuration error (anything not listed below).
pub(crate) const ERROR: u8 = 1;
/// A usage error: an argument that does not parse (clap's own errors exit 2 too).
pub(crate) const USAGE: u8 = 2;
/// A task or schedule that does not exist.
pub(crate) const NOT_FOUND: u8 = 3;
/// Nothing to do: a task already finished, a task that is not a dead letter.
pub(crate) const NOTHING_TO_DO: u8 = 4;

/// An outcome that ends the command with a code of its own.
#[derive(Debug)]
pub(crate) struct Exit {
    code: u8,
    message: String,
}

impl Exit {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn nothing_to_do(message: impl Into<String>) -> Self {
        Self {
            code: NOTHING_TO_DO,
            message: message.into(),
        }
    }

    pub(crate) fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}
