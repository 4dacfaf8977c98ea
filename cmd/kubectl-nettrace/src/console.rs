//! Stdout and stderr behind writer threads with bounded queues, so that a
//! reader that stops reading (`kubectl nettrace … | less`, left alone) never
//! blocks the session: the agents' streams are still read, the keep-alive
//! pings still go out, and what does not fit in the queue is dropped and
//! counted instead of waited for.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most bytes of output queued for stdout and not yet written.
pub const STDOUT_QUEUE: usize = 4 << 20;
/// Most bytes of diagnostics queued for stderr and not yet written.
pub const STDERR_QUEUE: usize = 1 << 20;
/// Room on top of a queue's bound for small records that should not be
/// dropped with the events (JSON `lost` records, at most one a second per
/// node).
const CONTROL_SLACK: usize = 64 << 10;
/// After a signal, how long the output may take to reach its reader before
/// the plugin exits without it (what is left is counted as dropped).
pub const STOP_BUDGET: Duration = Duration::from_secs(1);
/// Most bytes the writer gathers from the queue for one write.
const WRITE_CHUNK: usize = 256 << 10;

/// Set on the first SIGINT/SIGTERM: from then on, waiting for a reader that
/// does not read is bounded by [`STOP_BUDGET`].
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

struct Chunk {
    bytes: Vec<u8>,
    events: u64,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// No more chunks come: the writer ends once the queue is empty.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Bytes queued or being written.
    bytes: AtomicUsize,
    /// Events in the chunks queued or being written.
    events: AtomicU64,
    /// Events refused (queue full) or given up on.
    dropped: AtomicU64,
    /// Chunks without events refused (queue full).
    dropped_other: AtomicU64,
    /// The write error that stopped the writer.
    error: Mutex<Option<String>>,
    /// The writer has ended (everything written, or an error).
    done: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A writer thread and its queue, bounded in bytes.
pub struct Pipe {
    shared: Arc<Shared>,
    max: usize,
}

impl Pipe {
    /// Starts a writer thread writing to `out`, with a queue of at most
    /// `max` bytes.
    pub fn start<W: Write + Send + 'static>(name: &str, max: usize, out: W) -> Arc<Pipe> {
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || write_loop(&state, out));
        if let Err(e) = spawned {
            *lock(&shared.error) = Some(format!("cannot start the {name} writer: {e}"));
            shared.done.store(true, Ordering::Release);
        }
        Arc::new(Pipe { shared, max })
    }

    /// The writer of the process's stdout.
    pub fn stdout() -> Arc<Pipe> {
        Pipe::start("stdout", STDOUT_QUEUE, io::stdout())
    }

    /// Whether a chunk of `len` bytes would be taken now.
    pub fn has_room(&self, len: usize) -> bool {
        self.shared.bytes.load(Ordering::Acquire) + len <= self.max
    }

    /// Queues `text` (holding `events` events) unless the queue is full or
    /// the writer has stopped: then it is dropped and its events counted.
    /// Returns whether it was queued.
    pub fn send(&self, text: String, events: u64) -> bool {
        self.push(text.into_bytes(), events, self.max)
    }

    /// [`Pipe::send`] for bytes that are not text (`--pcap`).
    pub fn send_bytes(&self, bytes: Vec<u8>, events: u64) -> bool {
        self.push(bytes, events, self.max)
    }

    /// Queues a small record that may go past the bound by a little.
    pub fn send_control(&self, text: String) -> bool {
        self.push(text.into_bytes(), 0, self.max + CONTROL_SLACK)
    }

    fn push(&self, bytes: Vec<u8>, events: u64, max: usize) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let len = bytes.len();
        let mut q = lock(&self.shared.queue);
        if q.closed
            || self.shared.done.load(Ordering::Acquire)
            || self.shared.bytes.load(Ordering::Acquire) + len > max
        {
            drop(q);
            self.count_dropped(events);
            if events == 0 {
                self.shared.dropped_other.fetch_add(1, Ordering::AcqRel);
            }
            return false;
        }
        self.shared.bytes.fetch_add(len, Ordering::AcqRel);
        self.shared.events.fetch_add(events, Ordering::AcqRel);
        q.chunks.push_back(Chunk { bytes, events });
        drop(q);
        self.shared.wake.notify_one();
        true
    }

    /// Counts events dropped without being formatted.
    pub fn count_dropped(&self, events: u64) {
        self.shared.dropped.fetch_add(events, Ordering::AcqRel);
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Chunks without events (diagnostic lines, records) dropped so far.
    pub fn dropped_other(&self) -> u64 {
        self.shared.dropped_other.load(Ordering::Acquire)
    }

    /// The error that stopped the writer (e.g. the reader went away).
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.error).clone()
    }

    /// No more output: lets the writer finish what is queued.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
    }

    /// Whether the writer has ended.
    pub fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Gives up on what is still queued or being written: counted as
    /// dropped. Returns how many events that was.
    fn abandon(&self) -> u64 {
        let left = self.shared.events.swap(0, Ordering::AcqRel);
        self.count_dropped(left);
        left
    }

    /// Closes the queue and waits until it is written: as long as it takes
    /// (a reader that reads slowly gets everything) unless the plugin was
    /// interrupted, then at most [`STOP_BUDGET`] from the interruption or
    /// from now, whichever is later. Returns how many events were given up on.
    pub async fn finish(&self) -> u64 {
        self.finish_with(&INTERRUPTED).await
    }

    async fn finish_with(&self, interrupted: &AtomicBool) -> u64 {
        self.close();
        let mut limit: Option<Instant> = None;
        loop {
            if self.is_done() {
                return 0;
            }
            if limit.is_none() && interrupted.load(Ordering::Acquire) {
                limit = Some(Instant::now() + STOP_BUDGET);
            }
            if limit.is_some_and(|l| Instant::now() >= l) {
                return self.abandon();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Pipe::finish`] outside of the async runtime, bounded by `within`.
    pub fn finish_blocking(&self, within: Duration) {
        self.close();
        let limit = Instant::now() + within;
        while !self.is_done() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn write_loop<W: Write>(state: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut events = 0u64;
        batch.clear();
        {
            let mut q = lock(&state.queue);
            while q.chunks.is_empty() && !q.closed {
                q = state.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.chunks.is_empty() {
                break;
            }
            while let Some(c) = q.chunks.front() {
                if !batch.is_empty() && batch.len() + c.bytes.len() > WRITE_CHUNK {
                    break;
                }
                let Some(c) = q.chunks.pop_front() else { break };
                batch.extend_from_slice(&c.bytes);
                events += c.events;
            }
        }
        let r = out.write_all(&batch).and_then(|()| out.flush());
        state.bytes.fetch_sub(batch.len(), Ordering::AcqRel);
        // Events already given up on (abandon) are not taken back.
        let _ = state
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(events))
            });
        if let Err(e) = r {
            *lock(&state.error) = Some(e.to_string());
            break;
        }
    }
    state.done.store(true, Ordering::Release);
}

static STDERR: OnceLock<Arc<Pipe>> = OnceLock::new();

/// The stderr writer, started at the first diagnostic.
fn stderr_pipe() -> &'static Arc<Pipe> {
    STDERR.get_or_init(|| Pipe::start("stderr", STDERR_QUEUE, io::stderr()))
}

/// Queues one line for stderr (dropped, and counted, when stderr is not
/// read and its queue is full).
pub fn say_line(mut line: String) {
    line.push('\n');
    stderr_pipe().send_control(line);
}

/// Writes what is left for stderr, waiting at most `within` (the process
/// is about to exit).
pub fn close_stderr(within: Duration) {
    let Some(pipe) = STDERR.get() else {
        return; // nothing was said
    };
    let lost = pipe.dropped_other();
    if lost > 0 {
        pipe.send_control(format!(
            "kubectl-nettrace: {lost} diagnostic line(s) dropped (stderr was not read)\n"
        ));
    }
    pipe.finish_blocking(within);
}

/// `eprintln!` through the stderr writer: never blocks the caller.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say_line(format!($($arg)*))
    };
}
pub(crate) use say;

/// Test helpers: writers that keep what they get, and one that can be
/// stalled like a reader that stops reading.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// A writer into shared memory that blocks while `stalled` is set.
    #[derive(Clone, Default)]
    pub struct Capture {
        pub data: Arc<Mutex<Vec<u8>>>,
        pub stalled: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Capture {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.data)).into_owned()
        }

        pub fn stall(&self, on: bool) {
            *lock(&self.stalled.0) = on;
            self.stalled.1.notify_all();
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = lock(&self.stalled.0);
            while *s {
                s = self.stalled.1.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            drop(s);
            lock(&self.data).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Capture;
    use super::*;

    #[tokio::test]
    async fn a_stalled_reader_drops_and_counts_instead_of_blocking() {
        let cap = Capture::default();
        cap.stall(true);
        let pipe = Pipe::start("test", 100, cap.clone());
        // The first chunk is taken by the writer (and blocks there): it
        // still counts against the bound until it is written.
        assert!(pipe.send("a".repeat(60), 3));
        assert!(!pipe.has_room(41));
        assert!(pipe.send("b".repeat(40), 2));
        let started = Instant::now();
        for _ in 0..1000 {
            assert!(!pipe.send("c".repeat(10), 1));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never blocks");
        assert_eq!(pipe.dropped(), 1000);
        // Small records get a little slack.
        assert!(pipe.send_control("{\"type\":\"lost\"}\n".into()));
        cap.stall(false);
        assert_eq!(pipe.finish().await, 0);
        let text = cap.text();
        assert_eq!(
            text,
            format!(
                "{}{}{{\"type\":\"lost\"}}\n",
                "a".repeat(60),
                "b".repeat(40)
            )
        );
        assert!(pipe.error().is_none());
    }

    #[tokio::test]
    async fn after_an_interruption_a_reader_that_never_reads_is_given_up_on() {
        let cap = Capture::default();
        cap.stall(true);
        let pipe = Pipe::start("test", 1000, cap.clone());
        assert!(pipe.send("x".repeat(10), 1));
        assert!(pipe.send("y".repeat(10), 4));
        let interrupted = AtomicBool::new(true);
        let started = Instant::now();
        let left = pipe.finish_with(&interrupted).await;
        assert!(started.elapsed() < STOP_BUDGET + Duration::from_millis(500));
        assert_eq!(left, 5);
        assert_eq!(pipe.dropped(), 5);
        cap.stall(false);
    }

    #[test]
    fn a_write_error_stops_the_writer_and_is_kept() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let pipe = Pipe::start("test", 1000, Broken);
        assert!(pipe.send("x\n".into(), 1));
        pipe.finish_blocking(Duration::from_secs(5));
        assert!(pipe.is_done());
        assert!(pipe.error().is_some());
        assert!(!pipe.send("y\n".into(), 1), "nothing taken after an error");
    }
}
