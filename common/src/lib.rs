//! Pure logic shared by the nettrace crates: decoding the kernel's event
//! records, packet summaries, text and JSON output, the timeline grouping,
//! the tracer tree, packet filters, kernel symbols and drop reasons, and the
//! trace options both binaries share (clap derives them; nothing is parsed
//! from the process's own arguments here).
//!
//! Nothing here does I/O: every parser takes `&str` or `&[u8]`.

pub mod advice;
pub mod conntrack;
pub mod diag;
pub mod drop_reason;
pub mod event;
pub mod filter;
pub mod format;
pub mod json;
pub mod kallsyms;
pub mod nat;
pub mod options;
pub mod pcapng;
pub mod protocol;
pub mod remote;
pub mod rule;
pub mod summary;
pub mod timeline;
pub mod tracer;

pub use drop_reason::{DropReasonError, DropReasons};
pub use event::{DecodeError, Event, Packet, RawEvent, EVENT_SIZE, L4};
pub use filter::{Filter, FilterError, NetnsArg, Proto};
pub use format::{Annotations, LossStats, TextOptions, Timestamp};
pub use kallsyms::{Kallsyms, Sym};
pub use options::{Backend, OptionsError, TraceConfig, TraceOptions};
pub use timeline::{Block, Timeline};
pub use tracer::{Found, Leaf, LeafKind, Role, TracerTree, TreeError};
