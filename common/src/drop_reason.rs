//! Names of kfree_skb drop reasons, read from the kernel's own lists (the
//! `kfree_skb` tracepoint format, or BTF's `enum skb_drop_reason`), since
//! the numbers differ between kernel versions.

use std::borrow::Cow;
use std::fmt;

use thiserror::Error;

/// The drop reason list could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DropReasonError {
    /// The format text has no `__print_symbolic(REC->reason, ...)`.
    #[error("the kfree_skb tracepoint format lists no drop reasons (kernel older than 5.17?); drop reasons will be shown as numbers")]
    NotFound,
    /// The list is there but malformed.
    #[error("cannot read the drop reason list in the kfree_skb tracepoint format near \"{0}\"; drop reasons will be shown as numbers")]
    Malformed(String),
}

/// Drop reason code to name table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReasons {
    /// Sorted by code.
    names: Vec<(u32, String)>,
}

/// A drop reason shown by name, or as `reason N` when unknown.
#[derive(Debug, Clone, Copy)]
pub struct ReasonDisplay<'a> {
    name: Option<&'a str>,
    code: u32,
}

impl fmt::Display for ReasonDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(n) => f.write_str(n),
            None => write!(f, "reason {}", self.code),
        }
    }
}

const MARKER: &str = "__print_symbolic(REC->reason";

impl DropReasons {
    /// Reads the `{ code, "NAME" }` pairs of the `print fmt:` line in
    /// `events/skb/kfree_skb/format`.
    pub fn from_tracepoint_format(text: &str) -> Result<DropReasons, DropReasonError> {
        let start = text.find(MARKER).ok_or(DropReasonError::NotFound)?;
        let mut rest = &text[start + MARKER.len()..];
        let mut names = Vec::new();
        let near = |s: &str| s.chars().take(30).collect::<String>();
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.starts_with(')') {
                break;
            }
            let Some(body) = rest.strip_prefix('{') else {
                return Err(DropReasonError::Malformed(near(rest)));
            };
            let Some((entry, after)) = body.split_once('}') else {
                return Err(DropReasonError::Malformed(near(rest)));
            };
            let (code, name) = entry
                .split_once(',')
                .ok_or_else(|| DropReasonError::Malformed(near(rest)))?;
            let code: u32 = code
                .trim()
                .parse()
                .map_err(|_| DropReasonError::Malformed(near(rest)))?;
            let name = name.trim();
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .ok_or_else(|| DropReasonError::Malformed(near(rest)))?;
            names.push((code, name.to_string()));
            rest = after;
        }
        if names.is_empty() {
            return Err(DropReasonError::NotFound);
        }
        Ok(Self::sorted(names))
    }

    /// Builds the table from BTF `enum skb_drop_reason` enumerators,
    /// stripping the `SKB_DROP_REASON_` (or `SKB_`) prefix.
    pub fn from_btf_enum_pairs<I, S>(pairs: I) -> DropReasons
    where
        I: IntoIterator<Item = (S, u32)>,
        S: AsRef<str>,
    {
        let names = pairs
            .into_iter()
            .map(|(name, code)| {
                let n = name.as_ref();
                let n = n
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| n.strip_prefix("SKB_"))
                    .unwrap_or(n);
                (code, n.to_string())
            })
            .collect();
        Self::sorted(names)
    }

    fn sorted(mut names: Vec<(u32, String)>) -> DropReasons {
        names.sort_by_key(|(c, _)| *c);
        names.dedup_by_key(|(c, _)| *c);
        DropReasons { names }
    }

    /// Number of known reasons.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no reason is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of a code, e.g. `NETFILTER_DROP`.
    pub fn name(&self, code: u32) -> Option<&str> {
        self.names
            .binary_search_by_key(&code, |(c, _)| *c)
            .ok()
            .and_then(|i| self.names.get(i))
            .map(|(_, n)| n.as_str())
    }

    /// The name, or `reason N` when unknown.
    pub fn display(&self, code: u32) -> ReasonDisplay<'_> {
        ReasonDisplay {
            name: self.name(code),
            code,
        }
    }

    /// Like [`DropReasons::display`] as a string, borrowing when the name is known.
    pub fn name_or_code(&self, code: u32) -> Cow<'_, str> {
        match self.name(code) {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(format!("reason {code}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a 6.18 kernel's /sys/kernel/tracing/events/skb/kfree_skb/format.
    const FORMAT: &str = include_str!("../tests/data/kfree_skb_format.txt");

    #[test]
    fn parses_a_real_format() {
        let r = DropReasons::from_tracepoint_format(FORMAT).expect("parses");
        assert_eq!(r.len(), 127);
        assert_eq!(r.name(2), Some("NOT_SPECIFIED"));
        assert_eq!(r.name(12), Some("NETFILTER_DROP"));
        assert_eq!(r.name(128), Some("MAX"));
        assert_eq!(r.name(1), None);
        assert_eq!(r.display(12).to_string(), "NETFILTER_DROP");
        assert_eq!(r.display(4242).to_string(), "reason 4242");
        assert_eq!(r.name_or_code(3), "NO_SOCKET");
        assert_eq!(r.name_or_code(0), "reason 0");
    }

    #[test]
    fn older_kernel_numbers() {
        let text = r#"print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, "NOT_SPECIFIED" }, { 2, "NO_SOCKET" }, { 3, "PKT_TOO_SMALL" })"#;
        let r = DropReasons::from_tracepoint_format(text).expect("parses");
        assert_eq!(r.len(), 3);
        assert_eq!(r.name(1), Some("NOT_SPECIFIED"));
        assert_eq!(r.name(3), Some("PKT_TOO_SMALL"));
    }

    #[test]
    fn missing_or_broken_list() {
        let old = r#"print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location"#;
        let e = DropReasons::from_tracepoint_format(old).unwrap_err();
        assert_eq!(e, DropReasonError::NotFound);
        assert!(e.to_string().contains("shown as numbers"));
        let broken = r#"__print_symbolic(REC->reason, { 2, "A" }, { x, "B" })"#;
        assert_eq!(
            DropReasons::from_tracepoint_format(broken),
            Err(DropReasonError::Malformed("{ x, \"B\" })".into()))
        );
        let unclosed = r#"__print_symbolic(REC->reason, { 2, "A" "#;
        assert!(DropReasons::from_tracepoint_format(unclosed).is_err());
        assert_eq!(
            DropReasons::from_tracepoint_format("__print_symbolic(REC->reason)"),
            Err(DropReasonError::NotFound)
        );
    }

    #[test]
    fn from_btf() {
        let r = DropReasons::from_btf_enum_pairs([
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_CONSUMED", 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
            ("SKB_DROP_REASON_NETFILTER_DROP", 12),
            ("CUSTOM", 99),
        ]);
        assert_eq!(r.name(0), Some("NOT_DROPPED_YET"));
        assert_eq!(r.name(1), Some("CONSUMED"));
        assert_eq!(r.name(12), Some("NETFILTER_DROP"));
        assert_eq!(r.name(99), Some("CUSTOM"));
        assert_eq!(r.name(3), None);
        let owned = DropReasons::from_btf_enum_pairs(vec![(String::from("SKB_DROP_REASON_X"), 5)]);
        assert_eq!(owned.name(5), Some("X"));
    }
}
