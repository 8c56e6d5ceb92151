// SPDX-License-Identifier: GPL-3.0-or-later
//! Arguments shared by several commands.

use std::path::PathBuf;

use super::error::CliError;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(
        long,
        short = 'c',
        env = "PEC_CONFIG",
        default_value = "/etc/pec/pec.toml"
    )]
    pub config: PathBuf,
}

impl ConfigArgs {
    /// Reads and checks the configuration file.
    pub fn load(&self) -> Result<Config, CliError> {
        Ok(crate::config::load(&self.config)?)
    }
}
