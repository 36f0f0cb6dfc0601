//! Running Python clients against a server.

use std::process::Command;

/// Whether `python3 -c "import MODULES"` succeeds.
pub fn can_import(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// [`can_import`], printing `SKIPPED <test>: ...` when it cannot.
pub fn require(test: &str, modules: &str) -> bool {
    let ok = can_import(modules);
    if !ok {
        eprintln!(
            "SKIPPED {test}: python3 cannot import {modules} (.ci/run installs the pinned versions)"
        );
    }
    ok
}

/// Runs `cmd`; whether it succeeded, and its stdout and stderr as one text.
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
