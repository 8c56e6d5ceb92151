//! `pec store migrate|copy`.
//!
//! Exit status: 0 done, 1 the operation failed (or the copy does not verify), 2 usage or
//! configuration error.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{LogStore, PgStore, SqliteStore};
use crate::config::StoreBackend;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Bring the configured store's schema up to date (SQLite file or PostgreSQL database)
    /// and print its version. `pec serve` does the same at start.
    Migrate(crate::cli::ConfigArgs),
    /// Copy a SQLite store into the configured PostgreSQL store (which must be empty), in
    /// one transaction, then verify the legal log's chain and seals on PostgreSQL.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    /// The SQLite store to copy: `sqlite:PATH` (or just PATH).
    #[arg(long, value_name = "sqlite:PATH")]
    pub from: String,
}

fn usage(e: impl std::fmt::Display) -> i32 {
    eprintln!("pec store: {e}");
    2
}

fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("pec store: {e}");
    1
}

/// Runs one `pec store` command; returns the exit status.
pub fn run(command: &StoreCommand) -> i32 {
    match run_inner(command) {
        Ok(code) | Err(code) => code,
    }
}

fn run_inner(command: &StoreCommand) -> Result<i32, i32> {
    match command {
        StoreCommand::Migrate(args) => {
            let cfg = crate::config::load(&args.config).map_err(usage)?;
            let (shown, version) = match cfg.store.backend {
                StoreBackend::Sqlite => {
                    let s = SqliteStore::open(&cfg.store.path).map_err(fail)?;
                    (s.describe(), s.schema_version().map_err(fail)?)
                }
                StoreBackend::Postgres => {
                    if cfg.store.url.is_none() {
                        return Err(usage("store.url is required with backend \"postgres\""));
                    }
                    let one = crate::config::StoreConfig {
                        pool_size: 1,
                        ..cfg.store.clone()
                    };
                    let s = PgStore::open_config(&one).map_err(fail)?;
                    (s.describe(), s.schema_version().map_err(fail)?)
                }
            };
            println!("{shown}: schema version {version}");
            Ok(0)
        }
        StoreCommand::Copy(args) => {
            let cfg = crate::config::load(&args.config.config).map_err(usage)?;
            match (cfg.store.backend, cfg.store.url.as_deref()) {
                (StoreBackend::Postgres, Some(_)) => {}
                _ => {
                    return Err(usage(
                        "the configured store must be PostgreSQL (store.backend = \"postgres\", \
                         store.url)",
                    ))
                }
            };
            let from = PathBuf::from(args.from.strip_prefix("sqlite:").unwrap_or(&args.from));
            if !from.is_file() {
                return Err(usage(format!("no SQLite store at \"{}\"", from.display())));
            }
            let two = crate::config::StoreConfig {
                pool_size: 2,
                ..cfg.store.clone()
            };
            let dest = PgStore::open_config(&two).map_err(fail)?;
            let report = super::copy::copy_from_sqlite(&from, &dest).map_err(fail)?;
            for (table, rows) in &report.tables {
                println!("{table}: {rows} rows");
            }
            let opts = crate::log::VerifyOptions {
                tsa_ca: cfg.log.tsa_ca_file.clone(),
                signer_ca: None,
            };
            let verified = crate::log::verify(&dest, None, None, &opts).map_err(fail)?;
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
