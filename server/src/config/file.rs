//! `--config FILE`: the flags' values and the channel namespaces from a
//! TOML file (issue 23).
//!
//! The file's top-level keys are the flags' long names in snake_case
//! (`admin_token`, `redis_url`, ...); `[default_namespace]` and
//! `[[namespace]]` declare the channels' namespaces
//! ([`crate::channels::namespace`]). Precedence: command line, then
//! environment, then file, then the flag's default. An unknown key fails
//! start-up, and the message names it.
//!
//! How: clap parses the command line and the environment first; each file
//! key whose flag came from neither (clap's `ValueSource` says so) becomes
//! `--flag value` ahead of the real arguments, and clap parses again. So a
//! value from the file goes through the flag's own parser and checks, and
//! `--help` documents both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap::parser::ValueSource;
use serde::Deserialize;

use super::Config;
use crate::channels::namespace::{NamespaceError, Namespaces, RawNamespace};

/// Why the config file is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// It cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("the config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        message: String,
    },
    /// A top-level key that is no flag.
    #[error(
        "the config file {path} has an unknown key `{key}` (keys are the flags' long names in snake_case)"
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A value that is not a string, number, boolean or an array of them.
    #[error(
        "the config file {path}: `{key}` must be a string, a number, a boolean or an array of them"
    )]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// Its namespaces.
    #[error("the config file {path}: {source}")]
    Namespace {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: NamespaceError,
    },
}

/// Why the configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The command line or the environment (or `--help`, `--version`):
    /// clap's own error, which `exit()` prints as clap would.
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The config file.
    #[error(transparent)]
    File(#[from] FileError),
}

/// The sections that are not flags.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sections {
    default_namespace: Option<RawNamespace>,
    #[serde(default)]
    namespace: Vec<RawNamespace>,
}

impl Config {
    /// The configuration from `args` (the program name first), the
    /// environment and `--config FILE`, in that order of precedence.
    ///
    /// # Errors
    ///
    /// [`LoadError::Args`] as clap reports it, [`LoadError::File`] when the
    /// file cannot be read or has an unknown key or a bad value.
    pub fn load_from<I, T>(args: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Self::command().try_get_matches_from(&args)?;
        let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
            return Ok(<Self as clap::FromArgMatches>::from_arg_matches(&first)?);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| FileError::Read {
            path: path.clone(),
            source,
        })?;
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| FileError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        let sections = Sections {
            default_namespace: None,
            namespace: Vec::new(),
        };
        let sections = take_sections(&mut table, sections, &path)?;
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "server".into())];
        for (key, value) in &table {
            let (id, flag) = flag_of(key, &path)?;
            if matches!(
                first.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            push_values(&mut merged, &flag, key, value, &path)?;
        }
        merged.extend(args.into_iter().skip(1));
        let mut config = Self::try_parse_from_args(merged)?;
        config.namespaces = Namespaces::from_raw(sections.default_namespace, sections.namespace)
            .map_err(|source| FileError::Namespace { path, source })?;
        Ok(config)
    }

    fn try_parse_from_args(args: Vec<OsString>) -> Result<Self, clap::Error> {
        <Self as clap::Parser>::try_parse_from(args)
    }
}

/// Takes the namespace sections out of the file's table.
fn take_sections(
    table: &mut toml::Table,
    mut sections: Sections,
    path: &Path,
) -> Result<Sections, FileError> {
    let mut rest = toml::Table::new();
    for key in ["default_namespace", "namespace"] {
        if let Some(value) = table.remove(key) {
            rest.insert(key.to_owned(), value);
        }
    }
    if !rest.is_empty() {
        sections = rest
            .try_into()
            .map_err(|e: toml::de::Error| FileError::Namespace {
                path: path.to_owned(),
                source: NamespaceError::Shape(e.message().to_owned()),
            })?;
    }
    Ok(sections)
}

/// The argument's id and long flag of file key `key`: the flag's long
/// name in snake_case.
fn flag_of(key: &str, path: &Path) -> Result<(String, String), FileError> {
    let unknown = || FileError::UnknownKey {
        path: path.to_owned(),
        key: key.to_owned(),
    };
    if key == "config" {
        // One file: it does not name another.
        return Err(unknown());
    }
    Config::command()
        .get_arguments()
        .find_map(|arg| {
            let long = arg.get_long()?;
            (long.replace('-', "_") == key).then(|| (arg.get_id().to_string(), long.to_owned()))
        })
        .ok_or_else(unknown)
}

/// `--flag value` for each value of `value` (a boolean as `--flag=true`).
fn push_values(
    args: &mut Vec<OsString>,
    flag: &str,
    key: &str,
    value: &toml::Value,
    path: &Path,
) -> Result<(), FileError> {
    let bad = || FileError::BadValue {
        path: path.to_owned(),
        key: key.to_owned(),
    };
    let scalar = |value: &toml::Value| -> Option<String> {
        match value {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    };
    match value {
        toml::Value::Array(items) => {
            for item in items {
                let text = scalar(item).ok_or_else(bad)?;
                args.push(format!("--{flag}").into());
                args.push(text.into());
            }
        }
        other => {
            let text = scalar(other).ok_or_else(bad)?;
            // `--flag=value`: also right for a boolean flag that takes an
            // optional value, where `--flag false` would be read as `--flag`.
            args.push(format!("--{flag}={text}").into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::channels::namespace::Capability;

    fn file(text: &str) -> tempfile_lite::File {
        tempfile_lite::File::with(text)
    }

    /// A file in the target's temporary directory, removed on drop.
    mod tempfile_lite {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU64, Ordering};

        pub struct File(pub PathBuf);

        impl File {
            pub fn with(text: &str) -> Self {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("server-config-{}-{n}.toml", std::process::id()));
                let mut file = std::fs::File::create(&path).expect("a temp file");
                super::Write::write_all(&mut file, text.as_bytes()).expect("written");
                Self(path)
            }

            pub fn arg(&self) -> String {
                self.0.display().to_string()
            }
        }

        impl Drop for File {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn load(args: &[&str]) -> Result<Config, LoadError> {
        Config::load_from(std::iter::once("server").chain(args.iter().copied()))
    }

    #[test]
    fn the_file_sets_flags_below_the_command_line() {
        let f = file(
            r#"
            push_interval = "250ms"
            max_message_size = 1000
            public_echo = true
            allowed_origin = ["http://a", "http://b"]
            send_queue = 7
            "#,
        );
        let config = load(&["--config", &f.arg(), "--send-queue", "9"]).expect("valid");
        assert_eq!(config.push_interval, Duration::from_millis(250));
        assert_eq!(config.max_message_size, 1000);
        assert!(config.public_echo);
        assert_eq!(config.allowed_origins, ["http://a", "http://b"]);
        // The command line wins.
        assert_eq!(config.send_queue, 9);
        // Untouched flags keep their defaults.
        assert_eq!(config.ping_interval, Duration::from_secs(10));
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_fails_and_names_it() {
        let f = file("push_intervall = \"1s\"\n");
        let error = load(&["--config", &f.arg()])
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("`push_intervall`"), "{error}");
        let f = file("config = \"other.toml\"\n");
        assert!(load(&["--config", &f.arg()]).is_err());
        let f = file("push_interval = { a = 1 }\n");
        let error = load(&["--config", &f.arg()])
            .expect_err("a table")
            .to_string();
        assert!(error.contains("`push_interval`"), "{error}");
        // A value the flag's own parser refuses: clap's message.
        let f = file("push_interval = \"soon\"\n");
        assert!(matches!(
            load(&["--config", &f.arg()]),
            Err(LoadError::Args(_))
        ));
        let f = file("not toml at all [");
        assert!(matches!(
            load(&["--config", &f.arg()]),
            Err(LoadError::File(FileError::Parse { .. }))
        ));
        assert!(matches!(
            load(&["--config", "/nonexistent/server.toml"]),
            Err(LoadError::File(FileError::Read { .. }))
        ));
    }

    #[test]
    fn namespaces_come_from_the_file() {
        let f = file(
            r#"
            [[namespace]]
            name = "chat"
            anonymous = ["subscribe", "publish"]
            "#,
        );
        let config = load(&["--config", &f.arg()]).expect("valid");
        let chat = config.namespaces.of("chat:lobby").expect("declared");
        assert!(chat.anonymous.allows(Capability::Publish));
        let config = load(&[]).expect("no file");
        assert!(config.namespaces.of("chat:lobby").is_err());
        let f = file("[[namespace]]\nname = \"chat\"\nsize = 1\n");
        let error = load(&["--config", &f.arg()])
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("size"), "{error}");
    }
}
