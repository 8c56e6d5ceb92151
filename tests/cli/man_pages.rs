// SPDX-License-Identifier: GPL-3.0-or-later
//! The man pages are generated from the CLI definitions and the sample configuration.

use std::process::Command;

#[test]
fn generate_man_writes_pec_8_and_pec_toml_5() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_pec"))
        .arg("generate-man")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let pec8 = std::fs::read_to_string(dir.path().join("pec.8")).unwrap();
    assert!(
        pec8.starts_with(".ie") || pec8.contains(".TH pec 8"),
        "{}",
        &pec8[..200.min(pec8.len())]
    );
    for section in ["PEC VERIFY", "PEC SERVE", "PEC CHECK-CONFIG"] {
        assert!(pec8.contains(section), "pec.8 lacks {section}");
    }
    assert!(
        !pec8.contains("GENERATE-MAN"),
        "hidden commands stay out of the page"
    );
    // One page: it names no page of its own per subcommand (`pec-verify(8)` does not
    // exist), and it points at what does.
    assert!(
        !pec8.contains("pec\\-verify(8)"),
        "pec.8 names pec-verify(8)"
    );
    assert!(!pec8.contains("(8)\n"), "pec.8 names a section-8 page");
    assert!(pec8.contains("PEC SETUP"), "pec.8 lacks PEC SETUP");
    assert!(pec8.contains("/usr/share/doc/pec/install.md"));
    let conf5 = std::fs::read_to_string(dir.path().join("pec.toml.5")).unwrap();
    assert!(conf5.starts_with(".TH PEC.TOML 5"));
    for table in ["[provider]", "[signing]", "[store]", "[access]"] {
        assert!(conf5.contains(table), "pec.toml.5 lacks {table}");
    }
}
