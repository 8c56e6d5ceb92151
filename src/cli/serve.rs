// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec serve`: logging, the runtime and the signals around [`crate::serve`].

use super::args::ConfigArgs;
use super::error::{exit, CliError};

/// Runs `pec serve` until SIGTERM or SIGINT; SIGHUP reloads the configuration. Returns the
/// exit status: 0 stopped, 1 could not start.
pub fn run(args: &ConfigArgs) -> i32 {
    exit("pec serve", serve(args))
}

fn serve(args: &ConfigArgs) -> Result<i32, CliError> {
    let filter = std::env::var("PEC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let config = crate::config::load(&args.config).map_err(CliError::Invalid)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the runtime: {e}")))?;
    // SIGHUP: re-read the configuration (see crate::reload).
    let (hup_tx, hup_rx) = tokio::sync::mpsc::channel(1);
    let reloads = crate::serve::Reloads {
        path: args.config.clone(),
        requests: hup_rx,
    };
    let _hup = runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            // A reload already waiting covers this signal too.
            let _ = hup_tx.try_send(());
        }
    });
    runtime
        .block_on(crate::serve::run_with(config, Some(reloads), async {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
        }))
        .map_err(CliError::failed)?;
    Ok(0)
}
