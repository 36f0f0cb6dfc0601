//! A server process on a free loopback port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The server process; killed when dropped.
#[derive(Debug)]
pub struct ServerProc {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT` of its gRPC listener.
    pub addr: String,
}

impl ServerProc {
    /// Runs `command` (the program, then leading arguments such as `serve`) with
    /// `--addr 127.0.0.1:0 --data DATA EXTRA...` and waits for its
    /// `listening on ADDR` line. `OCTET_API_KEY` is not inherited.
    pub fn start(command: &[&str], data: &Path, extra: &[&str]) -> ServerProc {
        Self::start_reading(command, data, extra, 0).0
    }

    /// [`ServerProc::start`], then reads `more` further stdout lines (`http on
    /// ADDR`, `metrics on ADDR`) and returns them.
    pub fn start_reading(
        command: &[&str],
        data: &Path,
        extra: &[&str],
        more: usize,
    ) -> (ServerProc, Vec<String>) {
        let (program, leading) = command.split_first().expect("a program to run");
        let mut child = Command::new(program)
            .args(leading)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("OCTET_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let lines = (0..more)
            .map(|_| {
                let mut l = String::new();
                reader.read_line(&mut l).expect("read a line");
                l.trim().to_string()
            })
            .collect();
        (ServerProc { child, addr }, lines)
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
