// SPDX-License-Identifier: GPL-3.0-or-later
//! The suite's test time-stamping authority (`tests/tsa/tsa.py`) over plain HTTP, for the
//! tests that sign REM evidences: its files made from a test PKI, the process started, and
//! killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running tsa.py, killed when dropped.
pub struct TsaProcess(Child);

impl Drop for TsaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes the TSA's key and certificate under `files` from the test PKI in `pki_dir`
/// (`tests/tsa/make-tsa.sh`) and starts tsa.py on them, with `mode_file` for its fault
/// modes when given. Returns the process and the URL it answers at.
pub fn start(files: &Path, pki_dir: &Path, mode_file: Option<&Path>) -> (TsaProcess, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tsa");
    let out = Command::new("sh")
        .arg(root.join("make-tsa.sh"))
        .arg(files)
        .arg(pki_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(root.join("tsa.py")).arg(files.join("tsa.cnf"));
    if let Some(mode_file) = mode_file {
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
    (TsaProcess(child), format!("http://127.0.0.1:{port}/tsa"))
}
