//! `turbo-server config check`: loads a configuration exactly as `run` does (the
//! defaults, then the `--config` file, then each `TURBO_*` variable or flag),
//! validates it, and prints every effective value with the place it came from.
//!
//! The sources come from the file's own keys and from clap's record of where each
//! flag's value was found ([`ArgMatches::value_source`]), so they cannot drift from
//! what [`RunArgs::load`] applies. The printout is TOML: the unset values are comments
//! and secrets are masked, so it can be saved as a config file once filled in.

use std::collections::BTreeMap;
use std::fmt;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};

use super::{ConfigError, ServerConfig};
use crate::cli::RunArgs;

/// `turbo-server config …`.
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate a configuration (the `--config` file, `TURBO_*` variables and flags,
    /// exactly as `run` would take them) and print every effective value with its
    /// source: default, file, env or flag. Secrets are masked. Exits 1 when invalid.
    Check(RunArgs),
}

/// Where an effective value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Nobody set it: the built-in default.
    Default,
    /// The `--config` file.
    File,
    /// A `TURBO_*` environment variable (named).
    Env(String),
    /// A command-line flag (named, with its dashes).
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// Why a configuration failed the check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A setting is invalid; `from` says who set it.
    #[error("invalid {field} (from {from}): {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
        /// Where its value came from.
        from: Source,
    },
    /// The file cannot be read or parsed, or a rule spanning settings is broken.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The effective configuration could not be printed (a bug, not the input).
    #[error("printing the configuration: {0}")]
    Print(String),
}

/// One effective setting.
#[derive(Debug)]
pub struct Entry {
    /// The TOML key.
    pub key: String,
    /// Its value as TOML (secrets masked), `None` when unset.
    pub value: Option<String>,
    /// Who set it.
    pub source: Source,
}

/// A valid configuration's effective values, in key order.
#[derive(Debug)]
pub struct Report {
    /// The `--config` file, if any.
    pub file: Option<std::path::PathBuf>,
    /// Every setting.
    pub entries: Vec<Entry>,
}

/// Loads and validates the configuration `args` describe (as `run` does) and reports
/// its effective values. `matches` are the `config check` subcommand's own matches.
///
/// # Errors
/// [`CheckError`] when the file cannot be read or parsed, or a value is invalid.
pub fn check(args: &RunArgs, matches: &ArgMatches) -> Result<Report, CheckError> {
    let sources = sources(args, matches)?;
    let cfg = args.load(ServerConfig::default()).map_err(|e| match e {
        ConfigError::Invalid { field, reason } => match sources.get(field) {
            Some(from) => CheckError::Invalid {
                field,
                reason,
                from: from.clone(),
            },
            None => ConfigError::Invalid { field, reason }.into(),
        },
        other => other.into(),
    })?;
    let print = |e: &dyn fmt::Display| CheckError::Print(e.to_string());
    let all = serde_json::to_value(&cfg).map_err(|e| print(&e))?;
    let set = toml::Table::try_from(&cfg).map_err(|e| print(&e))?;
    let keys = all
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>());
    let entries = keys
        .unwrap_or_default()
        .into_iter()
        .map(|key| Entry {
            value: set.get(&key).map(|v| masked(&key, v)),
            source: sources
                .get(key.as_str())
                .cloned()
                .unwrap_or(Source::Default),
            key,
        })
        .collect();
    Ok(Report {
        file: args.config.clone(),
        entries,
    })
}

/// Runs `turbo-server config check` and prints the report. `top` are the whole
/// command line's matches.
///
/// # Errors
/// [`CheckError`] when the configuration is invalid.
pub fn run(cmd: &ConfigCmd, top: &ArgMatches) -> Result<(), CheckError> {
    let ConfigCmd::Check(args) = cmd;
    let empty = ArgMatches::default();
    let matches = top
        .subcommand_matches("config")
        .and_then(|m| m.subcommand_matches("check"))
        .unwrap_or(&empty);
    print!("{}", check(args, matches)?);
    Ok(())
}

/// The source of every setting somebody set: the file's top-level keys, then the
/// flags and variables clap found (which win).
fn sources(args: &RunArgs, matches: &ArgMatches) -> Result<BTreeMap<String, Source>, CheckError> {
    let mut out = BTreeMap::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.clone(),
            source,
        })?;
        out.extend(table.keys().map(|k| (k.clone(), Source::File)));
    }
    let command = RunArgs::augment_args(clap::Command::new("check"));
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "config" | "check_config") || !matches.ids().any(|i| i == id) {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => {
                Source::Flag(format!("--{}", arg.get_long().unwrap_or(id)))
            }
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.get_env()
                    .map_or_else(|| id.to_owned(), |e| e.to_string_lossy().into_owned()),
            ),
            _ => continue,
        };
        out.insert(id.to_owned(), source);
    }
    Ok(out)
}

/// Settings printed as `"<redacted>"` whenever set.
const SECRETS: &[&str] = &["admin_token", "webhook_secret"];

/// `v` as TOML, with a secret masked and the password of any URL's user info too.
fn masked(key: &str, v: &toml::Value) -> String {
    match v {
        toml::Value::String(_) if SECRETS.contains(&key) => "\"<redacted>\"".to_owned(),
        toml::Value::String(s) => toml::Value::String(mask_url_password(s)).to_string(),
        other => other.to_string(),
    }
}

/// `scheme://user:PASSWORD@host/…` with the password replaced; anything else as is.
fn mask_url_password(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return s.to_owned();
    };
    let Some((user, _)) = userinfo.split_once(':') else {
        return s.to_owned();
    };
    format!(
        "{scheme}://{user}:<redacted>@{}",
        &rest[userinfo.len() + 1..]
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(path) => writeln!(f, "# {}: valid", path.display())?,
            None => writeln!(f, "# no --config file; the configuration is valid")?,
        }
        writeln!(f, "# precedence: flag > env > file > default")?;
        for e in &self.entries {
            let line = match &e.value {
                Some(v) => format!("{} = {v}", e.key),
                None => format!("# {} is not set", e.key),
            };
            writeln!(f, "{line:<50} # {}", e.source)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: RunArgs,
    }

    fn report(argv: &[&str]) -> Result<Report, CheckError> {
        let argv = std::iter::once("check").chain(argv.iter().copied());
        let matches = Wrap::command().get_matches_from(argv);
        let args = Wrap::from_arg_matches(&matches).expect("args").args;
        check(&args, &matches)
    }

    fn entry<'a>(r: &'a Report, key: &str) -> &'a Entry {
        r.entries.iter().find(|e| e.key == key).expect(key)
    }

    #[test]
    fn each_value_names_its_source() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("server.toml");
        let toml = "socks_listen = \"127.0.0.1:2000\"\ncores = 3\n\
                    ledger = \"postgres://turbo:hunter2@db:5432/turbo\"\n\
                    admin_token = \"sekrit-token\"\nshutdown_grace = \"45s\"\n";
        std::fs::write(&file, toml).expect("write");
        let path = file.to_string_lossy().into_owned();
        let r = report(&["--config", &path, "--cores", "4"]).expect("valid");
        let socks = entry(&r, "socks_listen");
        assert_eq!(socks.value.as_deref(), Some("\"127.0.0.1:2000\""));
        assert_eq!(socks.source, Source::File);
        let cores = entry(&r, "cores");
        assert_eq!(
            (cores.value.as_deref(), &cores.source),
            (Some("4"), &Source::Flag("--cores".into()))
        );
        assert_eq!(entry(&r, "http_listen").source, Source::Default);
        assert_eq!(
            entry(&r, "shutdown_grace").value.as_deref(),
            Some("\"45s\"")
        );
        assert_eq!(entry(&r, "public_addr").value, None);
        let text = r.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("sekrit"),
            "{text}"
        );
        assert!(
            text.contains("postgres://turbo:<redacted>@db:5432/turbo"),
            "{text}"
        );
        // The printout is a config file again (unset values are comments).
        let again: ServerConfig = toml::from_str(&text).expect("printout is TOML");
        assert_eq!(again.cores, 4);
        assert_eq!(again.shutdown_grace, std::time::Duration::from_secs(45));
    }

    #[test]
    fn an_invalid_value_names_who_set_it() {
        let err = report(&["--driver", "epoll"]).expect_err("not a driver");
        assert_eq!(
            err.to_string(),
            "invalid driver (from flag --driver): must be auto, io_uring or legacy"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "nope = 1\n").expect("write");
        let path = file.to_string_lossy().into_owned();
        let err = report(&["--config", &path]).expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_password("redis://:pw@127.0.0.1:6379/0"),
            "redis://:<redacted>@127.0.0.1:6379/0"
        );
        assert_eq!(mask_url_password("memory"), "memory");
        assert_eq!(
            mask_url_password("https://rpc.example/v3/a@b"),
            "https://rpc.example/v3/a@b"
        );
    }
}
