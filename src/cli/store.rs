// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec store migrate|copy`.
//!
//! Exit status: 0 done, 1 the operation failed (or the copy does not verify), 2 usage or
//! configuration error.

use std::path::PathBuf;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use clap::{Args, Subcommand};

use crate::config::StoreBackend;
use crate::store::{LogStore, PgStore, SqliteStore};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Bring the configured store's schema up to date (SQLite file or PostgreSQL database)
    /// and print its version. `pec serve` does the same at start.
    Migrate(ConfigArgs),
    /// Copy a SQLite store into the configured PostgreSQL store (which must be empty), in
    /// one transaction, then verify the legal log's chain and seals on PostgreSQL.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The SQLite store to copy: `sqlite:PATH` (or just PATH).
    #[arg(long, value_name = "sqlite:PATH")]
    pub from: String,
}

/// Runs one `pec store` command; returns the exit status.
pub fn run(command: &StoreCommand) -> i32 {
    exit("pec store", run_inner(command))
}

fn run_inner(command: &StoreCommand) -> Result<i32, CliError> {
    match command {
        StoreCommand::Migrate(args) => {
            let cfg = crate::config::load(&args.config).map_err(CliError::usage)?;
            let (shown, version) = match cfg.store.backend {
                StoreBackend::Sqlite => {
                    let s = SqliteStore::open(&cfg.store.path).map_err(CliError::failed)?;
                    (s.describe(), s.schema_version().map_err(CliError::failed)?)
                }
                StoreBackend::Postgres => {
                    if cfg.store.url.is_none() {
                        return Err(CliError::usage(
                            "store.url is required with backend \"postgres\"",
                        ));
                    }
                    let one = crate::config::StoreConfig {
                        pool_size: 1,
                        ..cfg.store.clone()
                    };
                    let s = PgStore::open_config(&one).map_err(CliError::failed)?;
                    (s.describe(), s.schema_version().map_err(CliError::failed)?)
                }
            };
            println!("{shown}: schema version {version}");
            Ok(0)
        }
        StoreCommand::Copy(args) => {
            let cfg = crate::config::load(&args.config.config).map_err(CliError::usage)?;
            match (cfg.store.backend, cfg.store.url.as_deref()) {
                (StoreBackend::Postgres, Some(_)) => {}
                _ => {
                    return Err(CliError::usage(
                        "the configured store must be PostgreSQL (store.backend = \"postgres\", \
                         store.url)",
                    ))
                }
            };
            let from = PathBuf::from(args.from.strip_prefix("sqlite:").unwrap_or(&args.from));
            if !from.is_file() {
                return Err(CliError::usage(format!(
                    "no SQLite store at \"{}\"",
                    from.display()
                )));
            }
            let two = crate::config::StoreConfig {
                pool_size: 2,
                ..cfg.store.clone()
            };
            let dest = PgStore::open_config(&two).map_err(CliError::failed)?;
            let report =
                crate::store::copy::copy_from_sqlite(&from, &dest).map_err(CliError::failed)?;
            for (table, rows) in &report.tables {
                println!("{table}: {rows} rows");
            }
            let opts = crate::log::VerifyOptions {
                tsa_ca: cfg.log.tsa_ca_file.clone(),
                signer_ca: None,
            };
            let verified =
                crate::log::verify(&dest, None, None, &opts).map_err(CliError::failed)?;
            for p in &verified.problems {
                println!("{p}");
            }
            println!(
                "copied into {}: {} records, {} seals checked: {}",
                dest.describe(),
                verified.records,
                verified.seals,
                if verified.problems.is_empty() {
                    "ok".to_string()
                } else {
                    format!("{} problems", verified.problems.len())
                }
            );
            Ok(i32::from(!verified.problems.is_empty()))
        }
    }
}
