//! Running a binary's command line as a user would.

use std::path::Path;
use std::process::{Command, Output};

/// A binary and the environment every run gets (`OCTET_API_KEY` is never
/// inherited from the test's own environment).
#[derive(Debug, Clone)]
pub struct Cli {
    program: String,
    envs: Vec<(String, String)>,
}

impl Cli {
    /// Runs `program` (a test crate's `env!("CARGO_BIN_EXE_...")`).
    pub fn new(program: &str) -> Cli {
        Cli {
            program: program.to_string(),
            envs: Vec::new(),
        }
    }

    /// Sets a variable for every run (e.g. `OCTET_URL`).
    pub fn env(mut self, key: &str, value: &str) -> Cli {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// The command, for callers that need more than [`Cli::run`].
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.env_remove("OCTET_API_KEY");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Runs with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", self.program))
    }

    /// Runs with `args`, expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs with `args`, expects a failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} should fail\nstdout:\n{}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }
}

/// Bytes as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path as `&str`, for argument lists.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
