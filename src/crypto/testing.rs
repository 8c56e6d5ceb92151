// SPDX-License-Identifier: GPL-3.0-or-later
//! Test support: runs the scripts of `tests/pki/` to create a test PKI and SoftHSM2 tokens.
//! Used by `tests/`, `benches/` and the end-to-end suite; not part of the service.
//!
//! The scripts are found through the crate's source directory (`CARGO_MANIFEST_DIR` at build
//! time), so this works from `cargo test` and `cargo bench`, not from an installed binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TestSupportError {
    #[error("cannot run \"{script}\": {source}")]
    Spawn {
        script: String,
        source: std::io::Error,
    },
    #[error("\"{script}\" failed ({status}): {stderr}")]
    Failed {
        script: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Files written by `tests/pki/make-pki.sh` (see the script for the profile of each).
#[derive(Debug, Clone)]
pub struct TestPki {
    pub dir: PathBuf,
    /// "PEC Test CA": the trust anchor (`-CAfile`).
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The CA certificate again, as a chain file to put in the CMS.
    pub chain: PathBuf,
    /// Provider leaf for `pec.example.it` (PKCS#8 key and the same key as PKCS#1).
    pub it_key: PathBuf,
    pub it_key_pkcs1: PathBuf,
    pub it_cert: PathBuf,
    /// Provider leaf for `pec.example.net`.
    pub net_key: PathBuf,
    pub net_cert: PathBuf,
    /// Self-signed leaf unknown to the CA.
    pub outsider_key: PathBuf,
    pub outsider_cert: PathBuf,
    /// Leaf issued by the CA, expired on 2021-01-01.
    pub expired_key: PathBuf,
    pub expired_cert: PathBuf,
    /// Seal keys of the legal log (not the PEC message keys), for pec.example.it and
    /// pec.example.net.
    pub it_seal_key: PathBuf,
    pub it_seal_cert: PathBuf,
    pub net_seal_key: PathBuf,
    pub net_seal_cert: PathBuf,
}

/// Key types of [`issue_test_leaf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
}

impl TestKey {
    /// The KEYSPEC of `issue-leaf.sh`.
    pub fn spec(self) -> &'static str {
        match self {
            TestKey::Rsa2048 => "rsa:2048",
            TestKey::Rsa3072 => "rsa:3072",
            TestKey::Rsa4096 => "rsa:4096",
            TestKey::EcP256 => "ec:P-256",
            TestKey::EcP384 => "ec:P-384",
        }
    }
}

/// A leaf written by `tests/pki/issue-leaf.sh`.
#[derive(Debug, Clone)]
pub struct TestLeaf {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Runs `issue-leaf.sh`: one more `pec.example.it` leaf `name` of key type `key` from the
/// CA of `pki`, valid `validity` (`(start, end)` as `openssl ca` takes them,
/// `YYYYMMDDHHMMSSZ`; default 2020..2040).
pub fn issue_test_leaf(
    pki: &TestPki,
    name: &str,
    key: TestKey,
    validity: Option<(&str, &str)>,
) -> Result<TestLeaf, TestSupportError> {
    let mut args: Vec<&std::ffi::OsStr> =
        vec![pki.dir.as_os_str(), name.as_ref(), key.spec().as_ref()];
    if let Some((start, end)) = validity {
        args.push(start.as_ref());
        args.push(end.as_ref());
    }
    run("issue-leaf.sh", &args)?;
    Ok(TestLeaf {
        key: pki.dir.join(format!("{name}.key")),
        cert: pki.dir.join(format!("{name}.pem")),
    })
}

/// A token written by `tests/pki/make-token.sh`.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// Value for the `SOFTHSM2_CONF` environment variable of the process using the token.
    pub softhsm2_conf: PathBuf,
    pub label: String,
    pub pin: String,
    pub key_label: String,
}

/// `tests/pki/` in the source tree.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("pki")
}

fn run(script: &str, args: &[&std::ffi::OsStr]) -> Result<String, TestSupportError> {
    let path = scripts_dir().join(script);
    let output = Command::new("sh")
        .arg(&path)
        .args(args)
        .output()
        .map_err(|source| TestSupportError::Spawn {
            script: path.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestSupportError::Failed {
            script: path.display().to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs `make-pki.sh dir` (idempotent) and returns the paths of what it wrote.
pub fn make_test_pki(dir: &Path) -> Result<TestPki, TestSupportError> {
    run("make-pki.sh", &[dir.as_os_str()])?;
    let f = |name: &str| dir.join(name);
    Ok(TestPki {
        dir: dir.to_path_buf(),
        ca_cert: f("ca.pem"),
        ca_key: f("ca.key"),
        chain: f("chain.pem"),
        it_key: f("it.key"),
        it_key_pkcs1: f("it-pkcs1.key"),
        it_cert: f("it.pem"),
        net_key: f("net.key"),
        net_cert: f("net.pem"),
        outsider_key: f("outsider.key"),
        outsider_cert: f("outsider.pem"),
        expired_key: f("expired.key"),
        expired_cert: f("expired.pem"),
        it_seal_key: f("it-seal.key"),
        it_seal_cert: f("it-seal.pem"),
        net_seal_key: f("net-seal.key"),
        net_seal_cert: f("net-seal.pem"),
    })
}

/// Runs `make-token.sh dir label pin key cert key_label`: (re)creates token `label` in
/// `dir/tokens` with `key` and `cert` under `key_label`. Several tokens can share `dir`.
/// Create every token before the process makes its first PKCS#11 call: SoftHSM reads
/// `SOFTHSM2_CONF` and its tokens at `C_Initialize`.
pub fn make_test_token(
    dir: &Path,
    label: &str,
    pin: &str,
    key: &Path,
    cert: &Path,
    key_label: &str,
) -> Result<TestToken, TestSupportError> {
    let conf = run(
        "make-token.sh",
        &[
            dir.as_os_str(),
            label.as_ref(),
            pin.as_ref(),
            key.as_os_str(),
            cert.as_os_str(),
            key_label.as_ref(),
        ],
    )?;
    Ok(TestToken {
        softhsm2_conf: PathBuf::from(conf),
        label: label.to_string(),
        pin: pin.to_string(),
        key_label: key_label.to_string(),
    })
}

/// The SoftHSM2 module: `PKCS11_MODULE` if set, else the first usual install path found.
pub fn softhsm_module() -> Option<PathBuf> {
    if let Some(m) = std::env::var_os("PKCS11_MODULE") {
        return Some(PathBuf::from(m));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Whether `softhsm2-util` and `pkcs11-tool` run and the module exists.
pub fn softhsm_available() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--help")
            .output()
            .map(|_| true)
            .unwrap_or(false)
    };
    runs("softhsm2-util") && runs("pkcs11-tool") && softhsm_module().is_some()
}
