//! Stdout for the event loop: formatted chunks go to a writer thread through
//! a queue bounded in bytes, so that a reader that stops reading (a full
//! pipe) never blocks the loop. What does not fit is refused: the caller
//! drops it and counts its events as lost ("output stalled").

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

/// Most bytes queued for the writer (and not yet written) at any time.
pub const MAX_IN_FLIGHT: usize = 4 << 20;
/// The writer writes at most this much at a time, so that a slow reader's
/// progress shows.
const WRITE_PIECE: usize = 64 << 10;
/// After a stop was asked for, a writer that made no progress for this long
/// is given up on (the reader stopped reading).
const NO_PROGRESS: Duration = Duration::from_millis(300);

/// Room kept on top of [`MAX_IN_FLIGHT`] for small records that must not be
/// dropped with the events (the `lost` records: at most one a second).
const CONTROL_SLACK: usize = 64 << 10;

struct Chunk {
    bytes: Vec<u8>,
    events: u64,
}

#[derive(Default)]
struct Shared {
    /// Bytes queued and not yet written.
    bytes: AtomicUsize,
    /// Events in the chunks queued and not yet completely written.
    events: AtomicU64,
    /// Bytes written so far.
    written: AtomicU64,
    /// The write error that stopped the writer.
    error: Mutex<Option<io::Error>>,
}

/// The writer thread and its queue.
pub struct Output {
    tx: Option<mpsc::Sender<Chunk>>,
    shared: Arc<Shared>,
    finished: oneshot::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// How waiting for the writer ended.
pub enum Finish {
    /// Everything queued was written (or the writer stopped on this error).
    Done(io::Result<()>),
    /// The writer is still blocked (the reader does not read).
    TimedOut,
}

impl Output {
    /// Starts the writer thread on file descriptor 1.
    pub fn stdout() -> io::Result<Output> {
        Output::to_fd(1)
    }

    /// Starts the writer thread on a file of its own (`--pcap FILE`),
    /// which stays open for the rest of the process.
    pub fn file(file: File) -> io::Result<Output> {
        use std::os::fd::IntoRawFd;
        Output::to_fd(file.into_raw_fd())
    }

    /// Starts the writer thread on `fd`, which must stay open for the rest
    /// of the process (it is never closed here).
    fn to_fd(fd: RawFd) -> io::Result<Output> {
        let (tx, rx) = mpsc::channel::<Chunk>();
        let (done_tx, finished) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                // Not `io::stdout()`: its lock would be held while blocked,
                // and nothing here needs its buffer. ManuallyDrop: the fd
                // stays open after the thread ends.
                // SAFETY: the fd is open for the whole life of the process.
                let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
                'chunks: for chunk in rx {
                    for piece in chunk.bytes.chunks(WRITE_PIECE) {
                        if let Err(e) = out.write_all(piece) {
                            *state.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            break 'chunks;
                        }
                        state
                            .written
                            .fetch_add(piece.len() as u64, Ordering::AcqRel);
                    }
                    state.bytes.fetch_sub(chunk.bytes.len(), Ordering::AcqRel);
                    state.events.fetch_sub(chunk.events, Ordering::AcqRel);
                }
                let _ = done_tx.send(());
            })?;
        Ok(Output {
            tx: Some(tx),
            shared,
            finished,
            thread: Some(thread),
        })
    }

    /// Whether a chunk of `len` bytes would be accepted now.
    pub fn has_room(&self, len: usize) -> bool {
        self.shared.bytes.load(Ordering::Acquire) + len <= MAX_IN_FLIGHT
    }

    /// Queues `text` (holding `events` events) unless the queue is full;
    /// false when it was refused. An error once the writer has failed.
    pub fn send(&mut self, text: String, events: u64) -> io::Result<bool> {
        self.queue(text.into_bytes(), events, MAX_IN_FLIGHT)
    }

    /// [`Output::send`] for bytes that are not text (`--pcap`).
    pub fn send_bytes(&mut self, bytes: Vec<u8>, events: u64) -> io::Result<bool> {
        self.queue(bytes, events, MAX_IN_FLIGHT)
    }

    /// Queues a small record that should not be dropped with the events
    /// (refused only past a small extra allowance).
    pub fn send_control(&mut self, text: String) -> io::Result<bool> {
        self.queue(text.into_bytes(), 0, MAX_IN_FLIGHT + CONTROL_SLACK)
    }

    fn queue(&mut self, bytes: Vec<u8>, events: u64, limit: usize) -> io::Result<bool> {
        self.check()?;
        if bytes.is_empty() {
            return Ok(true);
        }
        let len = bytes.len();
        if self.shared.bytes.load(Ordering::Acquire) + len > limit {
            return Ok(false);
        }
        let Some(tx) = self.tx.as_ref() else {
            return Ok(false);
        };
        self.shared.bytes.fetch_add(len, Ordering::AcqRel);
        self.shared.events.fetch_add(events, Ordering::AcqRel);
        if tx.send(Chunk { bytes, events }).is_err() {
            // The writer stopped on an error between the check and now.
            self.check()?;
            return Err(io::Error::other("the stdout writer stopped"));
        }
        Ok(true)
    }

    /// The writer's error, if it stopped on one.
    fn check(&self) -> io::Result<()> {
        let error = self.shared.error.lock().unwrap_or_else(|p| p.into_inner());
        match error.as_ref() {
            Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }

    /// Events queued and not yet completely written.
    pub fn events_in_flight(&self) -> u64 {
        self.shared.events.load(Ordering::Acquire)
    }

    /// Closes the queue and waits until everything queued is written. With
    /// a `deadline`, gives up then, or earlier when the writer makes no
    /// progress for a while: the writer is left blocked, and the caller exits
    /// the process without waiting for it.
    pub async fn finish(&mut self, deadline: Option<tokio::time::Instant>) -> Finish {
        self.tx = None;
        if let Some(deadline) = deadline {
            let mut written = self.shared.written.load(Ordering::Acquire);
            let mut progress = tokio::time::Instant::now();
            loop {
                let step = (tokio::time::Instant::now() + Duration::from_millis(20)).min(deadline);
                if tokio::time::timeout_at(step, &mut self.finished)
                    .await
                    .is_ok()
                {
                    break;
                }
                let now = tokio::time::Instant::now();
                let w = self.shared.written.load(Ordering::Acquire);
                if w != written {
                    (written, progress) = (w, now);
                }
                if now >= deadline || now.duration_since(progress) >= NO_PROGRESS {
                    return Finish::TimedOut;
                }
            }
        } else {
            let _ = (&mut self.finished).await;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Finish::Done(self.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::IntoRawFd;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn everything_queued_is_written_in_order() {
        let (mut reader, writer) = io::pipe().unwrap();
        let mut out = Output::to_fd(writer.into_raw_fd()).unwrap();
        let chunks: Vec<String> = (0..40).map(|i| format!("{i}\n").repeat(10_000)).collect();
        let total: usize = chunks.iter().map(String::len).sum();
        let reading = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            reader.read_exact(&mut got).unwrap();
            got
        });
        for c in &chunks {
            // The reader keeps up: nothing is refused.
            while !out.send(c.clone(), 10_000).unwrap() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match runtime().block_on(out.finish(None)) {
            Finish::Done(r) => r.unwrap(),
            Finish::TimedOut => panic!("timed out without a deadline"),
        }
        assert_eq!(out.events_in_flight(), 0);
        assert_eq!(reading.join().unwrap(), chunks.concat().into_bytes());
    }

    #[test]
    fn a_reader_that_stops_reading_is_bounded_and_given_up_on() {
        let (reader, writer) = io::pipe().unwrap();
        let mut out = Output::to_fd(writer.into_raw_fd()).unwrap();
        let chunk = "x".repeat(256 << 10);
        let mut accepted = 0;
        while out.send(chunk.clone(), 1).unwrap() {
            accepted += 1;
            assert!(accepted <= 64, "the queue is not bounded");
        }
        // The pipe holds a little, the queue at most MAX_IN_FLIGHT.
        assert!(accepted * chunk.len() <= MAX_IN_FLIGHT + (1 << 20));
        assert!(!out.has_room(chunk.len()));
        assert!(out.events_in_flight() > 0);
        // A small record still fits.
        assert!(out.send_control("{}\n".into()).unwrap());
        let rt = runtime();
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let r = rt.block_on(out.finish(Some(deadline)));
        assert!(matches!(r, Finish::TimedOut));
        // No progress at all: given up long before the deadline.
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(reader);
    }

    #[test]
    fn a_closed_reader_is_an_error() {
        let (reader, writer) = io::pipe().unwrap();
        drop(reader);
        let mut out = Output::to_fd(writer.into_raw_fd()).unwrap();
        assert!(out.send("a line\n".into(), 1).unwrap());
        match runtime().block_on(out.finish(None)) {
            Finish::Done(r) => assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe),
            Finish::TimedOut => panic!("timed out without a deadline"),
        }
    }
}
