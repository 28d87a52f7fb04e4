//! The one error type of loading, and the collector every section pushes into.

use std::path::PathBuf;

/// A configuration problem, phrased for the installer who has to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has keys of the wrong type.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it names the line and key).
        message: String,
    },
    /// A key has a value the box cannot use.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The dotted key, e.g. `public_url`.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Several keys have problems; all are reported so that one round of edits fixes them.
    #[error("{} problems: {}", .0.len(), join_problems(.0))]
    Several(Vec<ConfigError>),
}

fn join_problems(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ConfigError {
    pub(super) fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid { key, problem: problem.into() }
    }

    /// `Ok` for no problem, the problem itself for one, [`ConfigError::Several`] for more.
    pub(super) fn from_problems(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Several(errors)),
        }
    }

    /// Each problem on its own, for printing one line per key.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            Self::Several(errors) => errors.iter().collect(),
            other => vec![other],
        }
    }
}
