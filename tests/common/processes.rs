//! The processes a test starts, and what they need: free loopback ports, unique tokens, and
//! one guard type for every child (memcached, sipfarm, sipp) that stops it by its pid.

use std::cell::Cell;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// How long a child gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A unique token for Call-IDs, tags, branches and file names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Send a signal (a name such as `STOP`) to a process this test started, by its pid.
pub fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill -{sig} {pid}");
}

fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A child process this test started. Dropping it stops it: SIGTERM to its pid, a bounded
/// wait, SIGKILL if it is still there, then wait() so that no zombie is left. A pid is only
/// signalled before the child is reaped, so it can never name another process.
pub struct Proc {
    child: Child,
    what: String,
    /// Set once the child is reaped (its pid is free from then on).
    exited: Option<ExitStatus>,
    frozen: Cell<bool>,
}

impl Proc {
    /// Spawn `cmd`; `what` names the program in panics (with how to install it).
    pub fn start(cmd: &mut Command, what: &str) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child,
            what: what.to_owned(),
            exited: None,
            frozen: Cell::new(false),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its standard input, when it was started with `Stdio::piped()` (once).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Whether it has not exited yet (reaps it if it has).
    pub fn running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// Send a signal (`STOP`, `CONT`, `TERM`...) unless it is already reaped.
    pub fn signal(&self, sig: &str) {
        if self.exited.is_none() {
            signal(self.pid(), sig);
        }
    }

    /// SIGSTOP: it stays alive but answers nothing.
    pub fn freeze(&self) {
        self.signal("STOP");
        self.frozen.set(true);
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal("CONT");
        self.frozen.set(false);
    }

    /// SIGKILL now, as a crash would, and reap it.
    pub fn crash(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Wait at most `limit` for it to exit on its own; None if it still runs.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.running() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.exited
    }

    /// Stop it: SIGTERM, at most `STOP_GRACE` to exit, then SIGKILL; always reaped.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.running() {
            // Never panics (it runs in drop): a failed signal ends in SIGKILL below.
            if self.frozen.get() {
                // A stopped process does not act on SIGTERM: let it run again first.
                try_signal(self.pid(), "CONT");
            }
            if !try_signal(self.pid(), "TERM") {
                eprintln!("kill -TERM {} failed: SIGKILL", self.pid());
                self.crash();
            } else if self.wait_for(STOP_GRACE).is_none() {
                eprintln!(
                    "{} (pid {}) still running {STOP_GRACE:?} after SIGTERM: SIGKILL",
                    self.what,
                    self.pid()
                );
                self.crash();
            }
        }
        self.exited
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh folder under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
