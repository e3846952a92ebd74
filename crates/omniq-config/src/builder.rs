//! Layered loading: defaults < YAML files < key/value maps < `OMNIQ_*`
//! environment < code overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::Format;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::error::ConfigError;
use crate::settings::{KEYS, Settings, StoreKind};
use crate::url::{StoreUrl, redact_text};
use crate::yaml::Yaml;

/// The environment variable naming a YAML file to load.
const CONFIG_ENV: &str = "OMNIQ_CONFIG";
const ENV_PREFIX: &str = "OMNIQ_";

/// Loads [`Settings`] from layered sources.
///
/// Precedence, lowest to highest, whatever order the methods are called in:
///
/// 1. built-in defaults ([`Settings::default`]);
/// 2. YAML files: those given to [`file`](Self::file), in call order, then the
///    one named by `OMNIQ_CONFIG` in [`env`](Self::env) /
///    [`env_from`](Self::env_from);
/// 3. key/value [`map`](Self::map)s, in call order;
/// 4. `OMNIQ_*` environment variables;
/// 5. [`set`](Self::set) overrides (code), or mutating the built struct.
///
/// Files, maps and overrides must only use known keys; unknown `OMNIQ_*`
/// environment variables are ignored, as are empty ones.
///
/// ```
/// use std::time::Duration;
/// use omniq_config::Settings;
///
/// let settings = Settings::builder()
///     .map([("max_attempts", "5"), ("lease", "1m")])
///     .env_from([("OMNIQ_MAX_ATTEMPTS".to_owned(), "7".to_owned())])
///     .build()?;
/// assert_eq!(settings.max_attempts, 7);
/// assert_eq!(settings.lease, Duration::from_secs(60));
/// # Ok::<(), omniq_config::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct SettingsBuilder {
    files: Vec<PathBuf>,
    env_files: Vec<PathBuf>,
    map: Vec<(String, String)>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, String)>,
}

impl SettingsBuilder {
    /// An empty builder: building it gives the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a YAML file. A file given here must exist; a missing file is an
    /// error at [`build`](Self::build).
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_path_buf());
        self
    }

    /// Adds key/value pairs, as if from a config file but with string values
    /// (`"5"`, `"30s"`, `"a,b"`).
    ///
    /// Keys are case-insensitive and may carry the `OMNIQ_` prefix, so
    /// `task_ttl`, `TASK_TTL` and `OMNIQ_TASK_TTL` are the same key.
    pub fn map<K: Into<String>, V: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.map.extend(
            pairs
                .into_iter()
                .map(|(k, v)| (normalize_key(&k.into()), v.into())),
        );
        self
    }

    /// Reads the process's `OMNIQ_*` environment variables now (see
    /// [`env_from`](Self::env_from)).
    ///
    /// Variables whose name or value is not valid Unicode are skipped.
    pub fn env(self) -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        self.env_from(vars)
    }

    /// Like [`env`](Self::env) but from the given `(name, value)` pairs
    /// instead of the process environment, which keeps tests free of races.
    ///
    /// Only names starting with `OMNIQ_` (any case) are used. `OMNIQ_CONFIG`
    /// names a YAML file loaded at file precedence (after
    /// [`file`](Self::file)s); the rest are settings (`OMNIQ_TASK_TTL` →
    /// `task_ttl`). Empty values count as unset.
    pub fn env_from(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, value) in vars {
            let Some(prefix) = name.get(..ENV_PREFIX.len()) else {
                continue;
            };
            if !prefix.eq_ignore_ascii_case(ENV_PREFIX) || value.trim().is_empty() {
                continue;
            }
            if name.eq_ignore_ascii_case(CONFIG_ENV) {
                self.env_files.push(PathBuf::from(value.trim()));
                continue;
            }
            let key = normalize_key(&name);
            if KEYS.contains(&key.as_str()) {
                self.env.push((key, value));
            }
        }
        self
    }

    /// Sets one key from code, above every other source. Same key rules and
    /// string values as [`map`](Self::map).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides
            .push((normalize_key(&key.into()), value.into()));
        self
    }

    /// Merges every layer and [validates](Settings::validate) the result.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::File`] when a YAML file is missing, unreadable or not
    ///   a YAML mapping;
    /// - [`ConfigError::UnknownKey`] for an unknown key in a file, map or
    ///   override;
    /// - [`ConfigError::UnknownScheme`] / [`ConfigError::InvalidUrl`] for a
    ///   bad store URL;
    /// - [`ConfigError::InvalidValue`] for a value that does not parse or
    ///   fails validation.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new();
        for path in self.files.iter().chain(&self.env_files) {
            let dict = load_file(path)?;
            figment = figment.merge(Layer::new(
                format!("config file `{}`", path.display()),
                dict,
            ));
        }
        figment = figment.merge(Layer::strings("map", &self.map)?);
        figment = figment.merge(Layer::strings("environment", &self.env)?);
        figment = figment.merge(Layer::strings("override", &self.overrides)?);

        // Parse URLs up front so their errors keep the key and the scheme.
        for kind in StoreKind::ALL {
            let key = kind.key();
            match figment.find_value(key) {
                Ok(Value::String(_, url)) => {
                    StoreUrl::parse(&url).map_err(|e| e.with_key(key))?;
                }
                Ok(Value::Empty(..)) | Err(_) => {}
                Ok(_) => {
                    return Err(ConfigError::InvalidUrl {
                        key: Some(key.to_owned()),
                        message: "expected a URL string".to_owned(),
                    });
                }
            }
        }

        let settings: Settings = figment.extract_lossy().map_err(from_figment)?;
        settings.validate()?;
        Ok(settings)
    }
}

impl fmt::Debug for SettingsBuilder {
    /// Shows files and keys but never values, which may hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys =
            |pairs: &[(String, String)]| pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        f.debug_struct("SettingsBuilder")
            .field("files", &self.files)
            .field("env_files", &self.env_files)
            .field("map_keys", &keys(&self.map))
            .field("env_keys", &keys(&self.env))
            .field("override_keys", &keys(&self.overrides))
            .finish()
    }
}

/// `OMNIQ_Task_TTL` → `task_ttl`.
fn normalize_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    match key.strip_prefix("omniq_") {
        Some(rest) => rest.to_owned(),
        None => key,
    }
}

fn check_key(key: &str, source_name: &str) -> Result<(), ConfigError> {
    if KEYS.contains(&key) {
        Ok(())
    } else {
        Err(ConfigError::UnknownKey {
            key: key.to_owned(),
            source_name: source_name.to_owned(),
        })
    }
}

fn load_file(path: &Path) -> Result<Dict, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(file_error("not a file".to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(file_error("file not found".to_owned()));
        }
        Err(e) => return Err(file_error(e.to_string())),
    }
    let dict: Option<Dict> =
        Yaml::from_path(path).map_err(|e| file_error(redact_text(&e.to_string())))?;
    let dict = dict.unwrap_or_default();
    let source_name = format!("config file `{}`", path.display());
    for key in dict.keys() {
        check_key(key, &source_name)?;
    }
    Ok(dict)
}

/// One figment layer with a descriptive name.
struct Layer {
    name: String,
    dict: Dict,
}

impl Layer {
    fn new(name: String, dict: Dict) -> Self {
        Layer { name, dict }
    }

    /// A layer of string values; later pairs win. Keys must be known.
    fn strings(name: &str, pairs: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        for (key, value) in pairs {
            check_key(key, name)?;
            values.insert(key.clone(), Value::from(value.clone()));
        }
        Ok(Layer::new(name.to_owned(), values.into_iter().collect()))
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Converts figment's error (which carries the key path) to a
/// [`ConfigError::InvalidValue`] naming the key, with URLs redacted.
fn from_figment(error: figment::Error) -> ConfigError {
    use figment::error::Kind;

    let Some(error) = error.into_iter().next() else {
        return ConfigError::invalid("settings", "unknown error");
    };
    let key = if error.path.is_empty() {
        "settings".to_owned()
    } else {
        error.path.join(".")
    };
    let message = match &error.kind {
        Kind::Message(message) => message.clone(),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {actual}")
        }
        other => other.to_string(),
    };
    ConfigError::invalid(key, redact_text(&message))
}
