// SPDX-License-Identifier: GPL-3.0-or-later
//! The suite's one launcher of the test time-stamping authority (`tests/tsa/tsa.py`): its
//! files made from a test PKI, the process started (plain HTTP for the REM tests; HTTPS
//! with basic authentication and client certificates, as accredited TSAs answer, for the
//! legal log's seals), and killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running tsa.py, killed when dropped.
pub struct TsaProcess(Child);

impl Drop for TsaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How tsa.py is started; the default is plain HTTP on make-tsa.sh's `tsa.cnf`.
#[derive(Default)]
pub struct Options<'a> {
    /// Another `tsa.cnf` than the one in the files (a fault test's own serial file).
    pub cnf: Option<&'a Path>,
    /// The file whose content makes tsa.py play faults (absent: it answers normally).
    pub mode_file: Option<&'a Path>,
    /// HTTPS with make-tsa.sh's server certificate, instead of plain HTTP.
    pub https: bool,
    /// With `https`: this server certificate and key (PEM) instead of make-tsa.sh's.
    pub server_cert: Option<(&'a Path, &'a Path)>,
    /// Basic authentication required: this user, with make-tsa.sh's `password` file.
    pub basic_auth_user: Option<&'a str>,
    /// Client certificates required, issued by this CA.
    pub client_ca: Option<&'a Path>,
}

/// Makes the TSA's key, certificates (server and client too), `tsa.cnf` and `password`
/// under `files` from the test PKI in `pki_dir` (`tests/tsa/make-tsa.sh`).
pub fn make_files(files: &Path, pki_dir: &Path) {
    let out = Command::new("sh")
        .arg(tsa_dir().join("make-tsa.sh"))
        .arg(files)
        .arg(pki_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts tsa.py on the files [`make_files`] made, as `opts` says. Returns the process and
/// the URL it answers at.
pub fn spawn(files: &Path, opts: &Options) -> (TsaProcess, String) {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(tsa_dir().join("tsa.py"));
    match opts.cnf {
        Some(cnf) => cmd.arg(cnf),
        None => cmd.arg(files.join("tsa.cnf")),
    };
    if opts.https {
        match opts.server_cert {
            Some((cert, key)) => cmd.arg("--tls").arg(cert).arg(key),
            None => cmd
                .arg("--tls")
                .arg(files.join("server.pem"))
                .arg(files.join("server.key")),
        };
    }
    if let Some(user) = opts.basic_auth_user {
        cmd.arg("--user").arg(user).arg(files.join("password"));
    }
    if let Some(ca) = opts.client_ca {
        cmd.arg("--client-ca").arg(ca);
    }
    if let Some(mode_file) = opts.mode_file {
        cmd.arg("--mode-file").arg(mode_file);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 for the test TSA");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("tsa.py prints its port");
    let scheme = if opts.https { "https" } else { "http" };
    (
        TsaProcess(child),
        format!("{scheme}://127.0.0.1:{port}/tsa"),
    )
}

/// Makes the TSA's files under `files` from the test PKI in `pki_dir` and starts tsa.py on
/// them over plain HTTP, with `mode_file` for its fault modes when given. Returns the
/// process and the URL it answers at.
pub fn start(files: &Path, pki_dir: &Path, mode_file: Option<&Path>) -> (TsaProcess, String) {
    make_files(files, pki_dir);
    spawn(
        files,
        &Options {
            mode_file,
            ..Options::default()
        },
    )
}

fn tsa_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tsa")
}
