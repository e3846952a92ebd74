//! A figment [`Format`] for YAML, backed by `serde-saphyr`.

use std::path::Path;

use figment::providers::Format;
use serde::de::DeserializeOwned;

/// YAML as a figment data format, parsed with [`serde_saphyr`].
///
/// ```
/// use figment::{Figment, providers::Format};
/// use omniq_config::Yaml;
///
/// #[derive(serde::Deserialize)]
/// struct Config {
///     answer: u32,
/// }
///
/// let config: Config = Figment::from(Yaml::string("answer: 42")).extract()?;
/// assert_eq!(config.answer, 42);
/// # Ok::<(), figment::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Yaml;

impl Format for Yaml {
    type Error = serde_saphyr::Error;

    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        // figment keeps only the message, so skip rendering source snippets.
        serde_saphyr::from_str_with_options(string, serde_saphyr::options! { with_snippet: false })
    }

    fn from_path<T: DeserializeOwned>(path: &Path) -> Result<T, Self::Error> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| <serde_saphyr::Error as serde::de::Error>::custom(e.to_string()))?;
        Self::from_str(&source)
    }
}

#[cfg(test)]
mod tests {
    use figment::value::{Dict, Value};

    use super::*;

    #[test]
    fn parses_scalars_lists_and_null() -> Result<(), serde_saphyr::Error> {
        let dict: Dict = Yaml::from_str("a: 1\nb: 30s\nc: [x, y]\nd: ~\ne: \"45\"\n# comment\n")?;
        assert!(matches!(dict.get("a"), Some(Value::Num(..))));
        assert_eq!(dict.get("b").and_then(Value::as_str), Some("30s"));
        assert!(matches!(dict.get("c"), Some(Value::Array(_, v)) if v.len() == 2));
        assert!(matches!(dict.get("d"), Some(Value::Empty(..))));
        assert_eq!(dict.get("e").and_then(Value::as_str), Some("45"));
        Ok(())
    }

    #[test]
    fn empty_document_is_none() -> Result<(), serde_saphyr::Error> {
        let dict: Option<Dict> = Yaml::from_str("# only a comment\n")?;
        assert!(dict.is_none());
        let dict: Option<Dict> = Yaml::from_str("")?;
        assert!(dict.is_none());
        Ok(())
    }
}
