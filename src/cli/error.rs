// SPDX-License-Identifier: GPL-3.0-or-later
//! The one error type of the commands, and how it is printed and turned into an exit status.

use std::fmt::Display;

use thiserror::Error;

use crate::config::ConfigError;

/// Why a command stopped. Each command prints it once, prefixed with its name
/// (`pec index sync: …`), and exits with [`CliError::status`].
#[derive(Debug, Error)]
pub enum CliError {
    /// The configuration file does not load: printed as is (it names the file, the line and
    /// the key). Exit status 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration is the subject of the command (`pec check-config`, `pec serve`)
    /// and is invalid: printed as is, exit status 1.
    #[error(transparent)]
    Invalid(ConfigError),
    /// Wrong arguments, or what the command needs cannot be set up (configuration value,
    /// store, signer, runtime): exit status 2.
    #[error("{0}")]
    Usage(String),
    /// The operation itself failed: exit status 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// A [`CliError::Usage`] from any error or message.
    pub fn usage(e: impl Display) -> Self {
        CliError::Usage(e.to_string())
    }

    /// A [`CliError::Failed`] from any error or message.
    pub fn failed(e: impl Display) -> Self {
        CliError::Failed(e.to_string())
    }

    /// The exit status: 1 for a failed operation or an invalid configuration under check,
    /// 2 for usage, configuration and setup errors.
    pub fn status(&self) -> i32 {
        match self {
            CliError::Invalid(_) | CliError::Failed(_) => 1,
            CliError::Config(_) | CliError::Usage(_) => 2,
        }
    }
}

/// A command's exit status: its own on success; on error the status of the error, printed
/// on standard error as `<command>: <message>` (a configuration error as is).
pub fn exit(command: &str, result: Result<i32, CliError>) -> i32 {
    match result {
        Ok(status) => status,
        Err(e) => {
            match &e {
                CliError::Config(_) | CliError::Invalid(_) => eprintln!("{e}"),
                _ => eprintln!("{command}: {e}"),
            }
            e.status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_those_of_the_commands() {
        let config = ConfigError {
            file: "pec.toml".into(),
            line: Some(3),
            key: None,
            message: "bad".into(),
        };
        assert_eq!(CliError::Config(config.clone()).status(), 2);
        assert_eq!(CliError::Invalid(config.clone()).status(), 1);
        assert_eq!(CliError::usage("x").status(), 2);
        assert_eq!(CliError::failed("x").status(), 1);
        assert_eq!(exit("pec test", Ok(0)), 0);
        assert_eq!(exit("pec test", Err(CliError::Invalid(config))), 1);
    }
}
