//! Child processes: the sim fleet and the floor (both this same binary, run with a hidden
//! subcommand) and the real proxy. A child whose stdin closes exits by itself, so none
//! outlives a harness that dies; a dropped handle also kills and reaps its child.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

/// A child process the harness started.
#[derive(Debug)]
pub struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ChildProc {
    /// Starts `cmd` with piped stdin (its lifeline) and stdout, stderr to `stderr`, and waits
    /// up to `wait` for the first line it prints.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        stderr: Option<&Path>,
        wait: Duration,
    ) -> io::Result<(ChildProc, String)> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        match stderr {
            Some(path) => cmd.stderr(std::fs::File::create(path)?),
            None => cmd.stderr(Stdio::inherit()),
        };
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let proc = ChildProc {
            name: name.to_owned(),
            child,
            stdin,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep reading so the child never blocks on a full pipe.
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        match rx.recv_timeout(wait) {
            Ok(Ok(line)) if !line.trim().is_empty() => Ok((proc, line.trim().to_owned())),
            Ok(Ok(_)) => Err(io::Error::other(format!(
                "{name}: exited before it was ready"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other(format!(
                "{name}: not ready after {wait:?}"
            ))),
        }
    }

    /// Starts a child that prints nothing; readiness is the caller's to check.
    pub fn spawn_quiet(name: &str, mut cmd: Command, stderr: &Path) -> io::Result<ChildProc> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr)?);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        Ok(ChildProc {
            name: name.to_owned(),
            child,
            stdin,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// This binary, to start the sim and floor children from.
pub fn this_exe() -> io::Result<PathBuf> {
    std::env::current_exe()
}

/// Space-separated socket addresses, as the children print them.
pub fn parse_addrs(line: &str) -> Result<Vec<SocketAddr>, String> {
    line.split_whitespace()
        .map(|a| a.parse().map_err(|e| format!("bad address {a:?}: {e}")))
        .collect()
}

/// Resolves once stdin reaches its end: the parent is gone or wants this child to stop.
pub fn stdin_closed() -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock().take(u64::MAX), &mut io::sink());
        let _ = tx.send(());
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn addresses_parse() {
        let a = parse_addrs("127.0.0.1:1 127.0.0.1:2\n").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].port(), 2);
        assert!(parse_addrs("127.0.0.1:1 nope").is_err());
        assert!(parse_addrs("").unwrap().is_empty());
    }

    #[test]
    fn child_prints_its_line_and_dies_with_its_handle() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo ready 1; cat >/dev/null");
        let (mut proc, line) = ChildProc::spawn("sh", cmd, None, Duration::from_secs(5)).unwrap();
        assert_eq!(line, "ready 1");
        assert!(proc.running());
        let pid = proc.pid();
        assert_eq!(proc.name(), "sh");
        drop(proc);
        // Killed and reaped: the pid is gone.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_child_that_exits_silently_is_an_error() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("exit 3");
        let err = ChildProc::spawn("quiet", cmd, None, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("exited before"), "{err}");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("exec sleep 5");
        let err = ChildProc::spawn("slow", cmd, None, Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("not ready"), "{err}");
    }
}
