//! The netfilter rule that decided a packet's fate, as `--nft-trace` learns
//! it from the kernel's nftables trace events: shown under the event it
//! explains (`                rule: ip filter INPUT #4: drop, comment "..."`),
//! as `"nft"` in JSON, and in the `--diag` summary's RULE column.

use serde::{Deserialize, Serialize};

/// One rule (or a chain's policy) and its verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NftRule {
    /// `ip`, `ip6`, `inet`, `bridge`, ...
    pub family: String,
    /// Table.
    pub table: String,
    /// Chain.
    pub chain: String,
    /// The rule's handle; `None` for the chain's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// `drop`, `accept`, `jump CHAIN`, ...
    pub verdict: String,
    /// The rule's comment (nft's, or iptables' `-m comment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl NftRule {
    /// `ip filter INPUT #4` (`... policy` for a chain's policy): the
    /// summary's RULE column.
    pub fn short(&self) -> String {
        match self.handle {
            Some(h) => format!("{} {} {} #{h}", self.family, self.table, self.chain),
            None => format!("{} {} {} policy", self.family, self.table, self.chain),
        }
    }

    /// The text line under the event, newline included:
    /// `                rule: ip filter INPUT #4: drop, comment "no pings"`.
    pub fn write_line(&self, out: &mut String) {
        out.push_str("                rule: ");
        out.push_str(&self.short());
        out.push_str(": ");
        out.push_str(&self.verdict);
        if let Some(c) = &self.comment {
            out.push_str(", comment ");
            // serde_json quoting escapes what a comment may hold
            out.push_str(&serde_json::to_string(c).unwrap_or_default());
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json() {
        let r = NftRule {
            family: "ip".into(),
            table: "filter".into(),
            chain: "INPUT".into(),
            handle: Some(4),
            verdict: "drop".into(),
            comment: Some("no \"pings\"".into()),
        };
        let mut s = String::new();
        r.write_line(&mut s);
        assert_eq!(
            s,
            "                rule: ip filter INPUT #4: drop, comment \"no \\\"pings\\\"\"\n"
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            r#"{"family":"ip","table":"filter","chain":"INPUT","handle":4,"verdict":"drop","comment":"no \"pings\""}"#
        );
        let policy = NftRule {
            handle: None,
            comment: None,
            ..r
        };
        assert_eq!(policy.short(), "ip filter INPUT policy");
    }
}
