//! Running the `nettrace` binary: spawn, wait for `begin tracing`, stop with a signal.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::env::nettrace_bin;

/// What `nettrace` prints on stderr once every program is attached.
pub const READY_MARKER: &str = "begin tracing";
/// How long attaching may take.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a signalled `nettrace` may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after the awaited output showed up, for events still in the ring buffer.
pub const SETTLE: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(50);

type Lines = Arc<Mutex<Vec<String>>>;

fn reader_thread<R: Read + Send + 'static>(src: R, sink: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.strip_suffix('\n').unwrap_or(&line);
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    sink.lock().unwrap().push(line.to_string());
                }
            }
        }
    })
}

/// The end of a `nettrace` run.
#[derive(Debug)]
pub struct Finished {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout_lines: Vec<String>,
    pub stderr_lines: Vec<String>,
}

impl Finished {
    /// The command line and everything it printed, for failure messages.
    pub fn describe(&self) -> String {
        describe(
            &self.args,
            Some(self.status),
            &self.stdout_lines,
            &self.stderr_lines,
        )
    }

    /// Panics (with the whole output) unless the exit status is 0.
    pub fn assert_success(&self) -> &Self {
        if !self.status.success() {
            panic!("nettrace did not exit with 0\n{}", self.describe());
        }
        self
    }

    /// Stderr lines that are not blank.
    pub fn nonempty_stderr(&self) -> Vec<&str> {
        self.stderr_lines
            .iter()
            .map(|l| l.as_str())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Whether stderr says tracing began.
    pub fn began_tracing(&self) -> bool {
        self.stderr_lines.iter().any(|l| l.contains(READY_MARKER))
    }
}

fn describe(
    args: &[String],
    status: Option<ExitStatus>,
    stdout: &[String],
    stderr: &[String],
) -> String {
    let mut s = format!("command: nettrace {}\n", args.join(" "));
    if let Some(st) = status {
        s.push_str(&format!("status: {st}\n"));
    }
    s.push_str(&format!("--- stdout ({} lines) ---\n", stdout.len()));
    for l in stdout {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(&format!("--- stderr ({} lines) ---\n", stderr.len()));
    for l in stderr {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("--- end ---");
    s
}

/// A running `nettrace`. Killed (SIGKILL) on drop if still running.
pub struct Nettrace {
    args: Vec<String>,
    child: Option<Child>,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
}

impl Nettrace {
    fn start(args: &[&str]) -> Nettrace {
        Nettrace::start_bin(&nettrace_bin(), args)
    }

    /// Starts `bin ARGS` without waiting for anything.
    pub fn start_bin(bin: &Path, args: &[&str]) -> Nettrace {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        let readers = vec![
            reader_thread(child.stdout.take().unwrap(), stdout.clone()),
            reader_thread(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Nettrace {
            args,
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// Starts `nettrace ARGS` and waits (up to [`READY_TIMEOUT`]) for `begin tracing` on stderr.
    /// Panics with everything collected if it exits first or times out.
    pub fn spawn(args: &[&str]) -> Nettrace {
        Nettrace::wait_ready(Nettrace::start(args))
    }

    /// [`Nettrace::spawn`] of `-p tcp --addr CLIENT --port CLIENT_PORT` and `extra`: the
    /// packets of one TCP connection, both ways, whatever NAT does to the server's side.
    pub fn spawn_tcp_client(client: Ipv4Addr, client_port: u16, extra: &[&str]) -> Nettrace {
        let (client, port) = (client.to_string(), client_port.to_string());
        let mut args = vec!["-p", "tcp", "--addr", &client, "--port", &port];
        args.extend_from_slice(extra);
        Nettrace::spawn(&args)
    }

    /// [`Nettrace::spawn`] of another binary (used by the harness self-tests).
    pub fn spawn_bin(bin: &Path, args: &[&str]) -> Nettrace {
        Nettrace::wait_ready(Nettrace::start_bin(bin, args))
    }

    fn wait_ready(mut nt: Nettrace) -> Nettrace {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if nt.stderr_lines().iter().any(|l| l.contains(READY_MARKER)) {
                return nt;
            }
            if let Some(status) = nt.child.as_mut().unwrap().try_wait().unwrap() {
                let fin = nt.collect(status);
                panic!(
                    "nettrace exited before `{READY_MARKER}`\n{}",
                    fin.describe()
                );
            }
            if Instant::now() > deadline {
                let desc = nt.describe_now();
                panic!("nettrace did not print `{READY_MARKER}` within {READY_TIMEOUT:?}\n{desc}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `nettrace ARGS` to completion (for bad input and `-t ?`), killing it after `timeout`
    /// (which fails the test).
    pub fn run_to_end(args: &[&str], timeout: Duration) -> Finished {
        Nettrace::start(args).wait_exit(timeout)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Stdout lines collected so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Stderr lines collected so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Polls until `pred(stdout lines)` holds or `timeout` passes; returns whether it held.
    /// Does not fail: assertions on the final output give better messages.
    pub fn wait_for_stdout(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stdout.lock().unwrap()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (up to `timeout`) for `pred(stdout)`, lets in-flight events arrive for
    /// [`SETTLE`], then stops with SIGINT. Whether `pred` held is not asserted here:
    /// check the returned output.
    pub fn stop_when(self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> Finished {
        self.wait_for_stdout(timeout, pred);
        std::thread::sleep(SETTLE);
        self.stop()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.pid() as i32);
        kill(pid, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig}): {e}"));
    }

    /// SIGINT, then wait (up to [`STOP_TIMEOUT`]; past it SIGKILL and fail).
    pub fn stop(self) -> Finished {
        self.stop_with(Signal::SIGINT)
    }

    /// Like [`Nettrace::stop`] with another signal (e.g. SIGTERM).
    pub fn stop_with(mut self, sig: Signal) -> Finished {
        let me = &mut self;
        match me.child.as_mut().unwrap().try_wait().unwrap() {
            Some(status) => {
                let fin = me.collect(status);
                panic!(
                    "nettrace exited before it was asked to stop\n{}",
                    fin.describe()
                );
            }
            None => me.signal(sig),
        }
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Waits up to `timeout` for the process to exit by itself (e.g. `--timeline -c N`).
    /// Past the timeout: SIGKILL and fail with everything collected.
    pub fn wait_exit(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return self.collect(status);
            }
            if Instant::now() > deadline {
                let child = self.child.as_mut().unwrap();
                let _ = child.kill();
                let status = child.wait().unwrap();
                let fin = self.collect(status);
                panic!(
                    "nettrace did not exit within {timeout:?}\n{}",
                    fin.describe()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn collect(&mut self, status: ExitStatus) -> Finished {
        self.child = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            args: self.args.clone(),
            status,
            stdout_lines: self.stdout_lines(),
            stderr_lines: self.stderr_lines(),
        }
    }

    fn describe_now(&self) -> String {
        describe(&self.args, None, &self.stdout_lines(), &self.stderr_lines())
    }
}

impl Drop for Nettrace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
