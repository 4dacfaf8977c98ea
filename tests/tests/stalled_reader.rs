//! Scenario: a reader that stops reading never holds nettrace (issue 10). Under a UDP flood,
//! with nettrace's stdout a pipe nobody reads (`nettrace ... | sleep 40`):
//! - SIGINT, SIGTERM and SIGHUP each end it within a second (asserted: 1.5 s from the
//!   signal), with status 0, its programs detached and the final counters on stderr;
//! - the events it cannot write are counted ("output stalled") and reported on stderr while
//!   the stall lasts, each distinct loss line once; with `-o json` the `lost` record carries
//!   them as `output_stalled`, and once the reader comes back the counts add up exactly.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nettrace_tests::runner::{READY_MARKER, READY_TIMEOUT};
use nettrace_tests::*;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PORT: u16 = 40_170;
/// The goal is one second; the assertion leaves room for a busy CI machine.
const EXIT_LIMIT: Duration = Duration::from_millis(1500);
/// How long a signalled nettrace is given before it is killed and the test fails.
const KILL_AFTER: Duration = Duration::from_secs(10);
/// Time allowed for the kernel to free the programs after the process exited.
const GRACE: Duration = Duration::from_secs(5);

/// How each `-o json` event line begins.
const EVENT_PREFIX: &[u8] = b"{\"type\":\"event\",";

/// A stderr line and when it was read.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A `nettrace` whose stdout is a pipe that nobody reads (until [`Stalled::start_reading`]).
struct Stalled {
    args: Vec<String>,
    child: Child,
    stdout: Option<ChildStdout>,
    /// Once read: every stdout line that is not an event (checked to be JSON)...
    stdout_lines: Arc<Mutex<Vec<String>>>,
    /// ...and how many event lines there were (too many to keep).
    stdout_events: Arc<AtomicU64>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Lines,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Stalled {
    /// Starts `nettrace ARGS` and waits for `begin tracing` on stderr.
    fn spawn(args: &[&str]) -> Stalled {
        let bin = nettrace_bin();
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr: Lines = Arc::default();
        let sink = stderr.clone();
        let src = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(src).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut me = Stalled {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout: child.stdout.take(),
            child,
            stdout_lines: Arc::default(),
            stdout_events: Arc::default(),
            stdout_reader: None,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !me.stderr_lines().iter().any(|l| l.contains(READY_MARKER)) {
            if let Some(status) = me.child.try_wait().unwrap() {
                panic!(
                    "nettrace exited ({status}) before `{READY_MARKER}`\n{}",
                    me.describe()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nettrace did not print `{READY_MARKER}` within {READY_TIMEOUT:?}\n{}",
                me.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The first loss line on stderr, with when it was read.
    fn first_loss_line(&self) -> Option<(Instant, String)> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| is_loss_line(l))
            .cloned()
    }

    /// The reader comes back: stdout is read from now on.
    fn start_reading(&mut self) {
        let src = self.stdout.take().expect("stdout already read");
        let sink = self.stdout_lines.clone();
        let events = self.stdout_events.clone();
        self.stdout_reader = Some(std::thread::spawn(move || {
            let mut reader = BufReader::new(src);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.starts_with(EVENT_PREFIX) && buf.ends_with(b"}\n") => {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.strip_suffix('\n').unwrap_or(&line).to_string();
                        sink.lock().unwrap().push(line);
                    }
                }
            }
        }));
    }

    /// Sends `sig` and waits for the exit (SIGKILL and fail past [`KILL_AFTER`]); returns
    /// the status and how long the exit took from the signal.
    fn signal_and_wait(&mut self, sig: Signal) -> (ExitStatus, Duration) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "nettrace exited ({status}) before it was asked to stop\n{}",
                self.describe()
            );
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let sent = Instant::now();
        kill(pid, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig}): {e}"));
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = sent.elapsed();
                if let Some(r) = self.stderr_reader.take() {
                    let _ = r.join();
                }
                if let Some(r) = self.stdout_reader.take() {
                    let _ = r.join();
                }
                return (status, took);
            }
            if sent.elapsed() > KILL_AFTER {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "nettrace still running {KILL_AFTER:?} after {sig} with a stalled stdout\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn describe(&self) -> String {
        format!(
            "command: nettrace {}\n--- stderr ---\n{}\n--- end ---",
            self.args.join(" "),
            self.stderr_lines().join("\n")
        )
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// UDP datagrams from A to B as fast as one socket can, until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(t: &Topology, port: u16) -> Flood {
        let to = SocketAddr::new(t.b_addr.into(), port);
        let path = t.a.path();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind in A");
            while !stop2.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    // ECONNREFUSED from an earlier ICMP port unreachable is expected.
                    let _ = sock.send_to(b"nettrace stalled reader", to);
                }
                sent2.fetch_add(256, Ordering::Relaxed);
            }
        });
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a stderr line reports losses (`nettrace: N events lost ...`).
fn is_loss_line(l: &str) -> bool {
    l.starts_with("nettrace: ") && (l.contains(" lost ") || l.contains(" dropped "))
}

/// The stderr loss lines.
fn loss_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|l| is_loss_line(l))
        .collect()
}

/// Asserts that no loss line was printed twice.
fn assert_no_repeated_loss_line(stderr: &[String], describe: &str) {
    let losses = loss_lines(stderr);
    for (i, l) in losses.iter().enumerate() {
        assert!(
            !losses[..i].contains(l),
            "loss line printed more than once: {l:?}\n{describe}"
        );
    }
}

/// A flood, a stdout nobody reads, then `sig`: nettrace must be gone within
/// [`EXIT_LIMIT`], with status 0, no program left and the final counters on stderr.
fn stop_with_stalled_stdout(subnet: u8, sig: Signal) {
    preflight();
    let t = Topology::bridged(subnet);
    let b = t.b_addr.to_string();
    let port = PORT.to_string();
    let mut nt = Stalled::spawn(&["-v", "-p", "udp", "--addr", &b, "--dport", &port]);
    let ids = prog_ids_from_verbose(&nt.stderr_lines());
    assert!(
        !ids.is_empty(),
        "no `prog id N` in -v output\n{}",
        nt.describe()
    );
    let flood = Flood::start(&t, PORT);
    // Far more than a pipe (64 KiB) and nettrace's own queue hold.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(flood.sent() > 0, "the flood sent nothing");
    let (status, took) = nt.signal_and_wait(sig);
    drop(flood);
    let detached = nt
        .stderr_lines()
        .into_iter()
        .find(|l| l.starts_with("detached in "));
    eprintln!(
        "exited {took:?} after {sig} ({})",
        detached.unwrap_or_default()
    );
    let stderr = nt.stderr_lines();
    let describe = format!("exit after {took:?}: {status}\n{}", nt.describe());
    assert!(
        took < EXIT_LIMIT,
        "nettrace took {took:?} to exit after {sig} with a stalled stdout\n{describe}"
    );
    assert!(
        status.success(),
        "nettrace did not exit 0 on {sig}\n{describe}"
    );
    // Programs detached: none of this run's programs is loaded any more.
    assert_progs_gone(&ids, GRACE);
    // The final counters: the last loss line, which counts what the reader never took.
    let losses = loss_lines(&stderr);
    let last = losses
        .last()
        .unwrap_or_else(|| panic!("no loss line on stderr\n{describe}"));
    assert!(
        last.contains("output stalled"),
        "the last loss line does not count the stalled output: {last:?}\n{describe}"
    );
    assert!(
        stderr.iter().any(|l| l.starts_with("detached in ")),
        "no `detached in` line (-v)\n{describe}"
    );
    assert_no_repeated_loss_line(&stderr, &describe);
}

#[test]
fn sigint_ends_a_session_whose_stdout_is_not_read() {
    stop_with_stalled_stdout(170, Signal::SIGINT);
}

#[test]
fn sigterm_ends_a_session_whose_stdout_is_not_read() {
    stop_with_stalled_stdout(171, Signal::SIGTERM);
}

#[test]
fn sighup_ends_a_session_whose_stdout_is_not_read() {
    stop_with_stalled_stdout(172, Signal::SIGHUP);
}

/// During a stall the dropped events are reported within a second or two, each distinct
/// line once; when the reader comes back, output resumes and, at exit, `matched` =
/// delivered + lost + output_stalled exactly.
#[test]
fn a_stall_is_reported_while_it_lasts_and_counted_exactly() {
    preflight();
    let t = Topology::bridged(173);
    let b = t.b_addr.to_string();
    let port = PORT.to_string();
    let mut nt = Stalled::spawn(&["-o", "json", "-p", "udp", "--addr", &b, "--dport", &port]);
    let flood = Flood::start(&t, PORT);
    let started = Instant::now();
    // The pipe and nettrace's queue fill within a fraction of a second of flooding; the
    // loss report comes at the next one-second tick.
    let limit = Duration::from_millis(2500);
    while nt.first_loss_line().is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some((at, first)) = nt.first_loss_line() else {
        panic!(
            "no loss line within {limit:?} of a flood into an unread stdout\n{}",
            nt.describe()
        );
    };
    assert!(
        first.contains("output stalled"),
        "the first loss line does not count the stalled output: {first:?}\n{}",
        nt.describe()
    );
    eprintln!(
        "first loss line {:?} after the flood began: {first}",
        at - started
    );
    // The reader comes back; the flood goes on for a while, then stops.
    nt.start_reading();
    std::thread::sleep(Duration::from_millis(1000));
    drop(flood);
    // Long enough for the tick after the last loss: nothing new to say, nothing printed.
    std::thread::sleep(Duration::from_millis(2500));
    let (status, took) = nt.signal_and_wait(Signal::SIGINT);
    let stderr = nt.stderr_lines();
    let stdout = nt.stdout_lines.lock().unwrap().clone();
    let describe = format!(
        "exit after {took:?}: {status}\n{}\n--- stdout (events left out) ---\n{}",
        nt.describe(),
        stdout.join("\n")
    );
    assert!(status.success(), "nettrace did not exit 0\n{describe}");
    assert_no_repeated_loss_line(&stderr, &describe);

    let values = parse_json_lines(&stdout);
    let delivered = nt.stdout_events.load(Ordering::Relaxed);
    assert!(delivered > 0, "no event reached stdout\n{describe}");
    let last = values
        .iter()
        .rev()
        .find(|v| v["type"] == "lost")
        .unwrap_or_else(|| panic!("no lost record on stdout\n{describe}"));
    let field = |k: &str| last[k].as_u64().unwrap_or(0);
    let (matched, lost, limited, stalled) = (
        field("matched"),
        field("events"),
        field("rate_limited"),
        field("output_stalled"),
    );
    assert!(
        stalled > 0,
        "the last lost record has no output_stalled: {last}\n{describe}"
    );
    assert_eq!(
        matched,
        delivered + lost + limited + stalled,
        "matched {matched} != delivered {delivered} + lost {lost} + rate-limited {limited} \
         + output stalled {stalled}\n{describe}"
    );
    // The last stderr loss line says the same as the last record.
    let losses = loss_lines(&stderr);
    let final_line = losses.last().copied().unwrap_or_default();
    assert!(
        final_line.contains(&format!("{stalled} events dropped (output stalled")),
        "the last stderr loss line does not match the last lost record {last}: {final_line:?}\n{describe}"
    );
}

/// The agent too: a plugin that stops reading (its stdout a full pipe) under a flood, then
/// SIGTERM: the agent is gone within [`EXIT_LIMIT`], even though its last lines (`bye`)
/// cannot be written.
#[test]
fn sigterm_ends_an_agent_whose_stdout_is_not_read() {
    preflight();
    let t = Topology::bridged(174);
    let b = t.b_addr.to_string();
    let bin = nettrace_bin();
    let mut child = Command::new(&bin)
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} agent: {e}", bin.display()));
    let mut stdin = child.stdin.take().expect("agent stdin");
    // The whole node (no targets), UDP to B: every datagram of the flood matches.
    let spec = format!(
        "{{\"v\":1,\"type\":\"spec\",\"targets\":[],\"options\":{{\"proto\":\"udp\",\"addr\":\"{b}\"}},\"deadline_secs\":60}}\n"
    );
    std::io::Write::write_all(&mut stdin, spec.as_bytes()).expect("write the spec");
    // Read up to `ready`, then stop reading.
    let mut out = BufReader::new(child.stdout.take().expect("agent stdout"));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read the agent's stdout");
        assert!(
            n > 0,
            "the agent closed its stdout before `ready`: {seen:?}"
        );
        let ready = line.contains("\"type\":\"ready\"");
        seen.push(line);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no `ready` within {READY_TIMEOUT:?}: {seen:?}"
        );
    }
    let flood = Flood::start(&t, PORT);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(flood.sent() > 0, "the flood sent nothing");
    let pid = Pid::from_raw(child.id() as i32);
    let sent = Instant::now();
    kill(pid, Signal::SIGTERM).expect("SIGTERM the agent");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the agent") {
            break s;
        }
        if sent.elapsed() > KILL_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent still ran {KILL_AFTER:?} after SIGTERM with a stalled stdout");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    drop(flood);
    drop(stdin);
    drop(out);
    eprintln!("agent exited {took:?} after SIGTERM ({status})");
    assert!(
        took < EXIT_LIMIT,
        "the agent took {took:?} to exit after SIGTERM with a stalled stdout"
    );
}
