//! The error type returned while loading and validating configuration.

use std::path::PathBuf;

/// An error found while loading, parsing or validating OmniQ configuration.
///
/// Every variant names the configuration key (or file) it is about. Messages
/// never contain URL passwords: URLs are only ever shown in redacted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value could not be parsed, or failed validation.
    #[error("invalid value for `{key}`: {message}")]
    InvalidValue {
        /// The configuration key, e.g. `task_ttl`.
        key: String,
        /// What is wrong with the value.
        message: String,
    },

    /// A store URL uses a scheme that no backend is registered for.
    #[error("unknown URL scheme `{scheme}`{}", for_key(.key))]
    UnknownScheme {
        /// The configuration key holding the URL, when known.
        key: Option<String>,
        /// The scheme as written, e.g. `foo` for `foo://bar`.
        scheme: String,
    },

    /// A store URL is malformed (for example it has no scheme).
    #[error("invalid URL{}: {message}", for_key(.key))]
    InvalidUrl {
        /// The configuration key holding the URL, when known.
        key: Option<String>,
        /// What is wrong with the URL; never contains the URL's secrets.
        message: String,
    },

    /// A key that OmniQ does not know was given in a file, map or override.
    ///
    /// Unknown `OMNIQ_*` environment variables are ignored rather than
    /// reported, since the environment is shared with other programs.
    #[error("unknown configuration key `{key}` in {source_name}")]
    UnknownKey {
        /// The key as normalised (lower case, without `OMNIQ_` prefix).
        key: String,
        /// Where the key came from, e.g. ``config file `omniq.yaml` `` or `map`.
        source_name: String,
    },

    /// A configuration file could not be read or parsed.
    #[error("cannot load configuration file `{}`: {message}", .path.display())]
    File {
        /// The file's path.
        path: PathBuf,
        /// Why it could not be loaded.
        message: String,
    },
}

impl ConfigError {
    /// The configuration key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::InvalidValue { key, .. } | Self::UnknownKey { key, .. } => Some(key),
            Self::UnknownScheme { key, .. } | Self::InvalidUrl { key, .. } => key.as_deref(),
            Self::File { .. } => None,
        }
    }

    /// Builds an [`ConfigError::InvalidValue`].
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidValue {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Attaches `key` to URL errors that do not have one yet.
    pub(crate) fn with_key(self, key: &str) -> Self {
        match self {
            Self::UnknownScheme { key: None, scheme } => Self::UnknownScheme {
                key: Some(key.to_owned()),
                scheme,
            },
            Self::InvalidUrl { key: None, message } => Self::InvalidUrl {
                key: Some(key.to_owned()),
                message,
            },
            other => other,
        }
    }

    /// Describes this error without its key, for use inside serde errors.
    pub(crate) fn detail(&self) -> String {
        match self {
            Self::InvalidValue { message, .. } | Self::InvalidUrl { message, .. } => {
                message.clone()
            }
            Self::UnknownScheme { scheme, .. } => format!("unknown URL scheme `{scheme}`"),
            other => other.to_string(),
        }
    }
}

fn for_key(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" for `{k}`"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_key() {
        let e = ConfigError::invalid("task_ttl", "unknown duration unit `parsecs`");
        assert_eq!(
            e.to_string(),
            "invalid value for `task_ttl`: unknown duration unit `parsecs`"
        );
        let e = ConfigError::UnknownScheme {
            key: None,
            scheme: "foo".into(),
        }
        .with_key("task_queue_url");
        assert_eq!(
            e.to_string(),
            "unknown URL scheme `foo` for `task_queue_url`"
        );
        assert_eq!(e.key(), Some("task_queue_url"));
        let e = ConfigError::InvalidUrl {
            key: None,
            message: "missing scheme".into(),
        };
        assert_eq!(e.to_string(), "invalid URL: missing scheme");
    }
}
