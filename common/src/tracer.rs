//! The tracer tree from `tracer.json`: groups of kernel functions and
//! tracepoints, selection by name (`-t`), and the `-t ?` listing.

use std::collections::HashSet;
use std::fmt::Write;

use serde_json::{Map, Value};
use thiserror::Error;

/// Highest argument index a leaf may name for `skb` or `sk`.
pub const MAX_ARG_INDEX: u64 = 11;

/// Largest tracer file accepted, in bytes (the shipped one is about 20 KiB).
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Deepest nesting of groups accepted (the root `all` is level 1; the
/// shipped tree has 4 levels).
pub const MAX_GROUP_DEPTH: usize = 32;

/// Deepest JSON nesting that [`MAX_GROUP_DEPTH`] levels of groups need: a
/// group of level k is an object at depth 2k-1 whose `children` list is at
/// depth 2k, and a leaf in it is an object at depth 2k+1.
const MAX_JSON_DEPTH: usize = 2 * MAX_GROUP_DEPTH + 1;

/// An error in `tracer.json` or in a `-t` selection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TreeError {
    /// The text is not JSON.
    #[error("tracer.json is not valid JSON ({0}); fix the syntax there")]
    Json(String),
    /// A node breaks the schema.
    #[error("tracer.json: {node}: {problem}")]
    Invalid {
        /// Which node (by name, or by position when it has none).
        node: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The text is larger than [`MAX_FILE_BYTES`].
    #[error("tracer.json is larger than 1 MiB ({0} bytes); a tracer tree is a few KiB of JSON")]
    TooLarge(usize),
    /// Nested deeper than [`MAX_GROUP_DEPTH`] levels of groups.
    #[error("tracer.json is nested too deeply at line {line}, column {column}: at most {MAX_GROUP_DEPTH} levels of groups; flatten the tree")]
    TooDeep {
        /// 1-based line of the bracket that went too deep.
        line: usize,
        /// 1-based column (in bytes) of that bracket.
        column: usize,
    },
    /// `-t` named a tracer that does not exist.
    #[error("unknown tracer '{0}'; run 'nettrace -t ?' to list them")]
    Unknown(String),
}

/// What happens to the skb at a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The skb passes through.
    #[default]
    Normal,
    /// The skb ends normally here (consume_skb).
    Consume,
    /// The skb is dropped here (kfree_skb).
    Drop,
    /// The function returns a clone of the skb.
    Clone,
}

/// How a leaf attaches to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafKind {
    /// A kernel function (kprobe).
    Function {
        /// Kernel function name.
        func: String,
    },
    /// A tracepoint `category/event`.
    Tracepoint {
        /// Tracepoint category, e.g. `net`.
        category: String,
        /// Tracepoint event, e.g. `netif_receive_skb`.
        event: String,
    },
}

/// A kernel function or tracepoint to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Unique display name.
    pub name: String,
    /// Function or tracepoint.
    pub kind: LeafKind,
    /// 0-based index of the `struct sk_buff *` argument.
    pub skb_arg: u8,
    /// 0-based index of a `struct sock *` argument, if any.
    pub sk_arg: Option<u8>,
    /// 0-based index of a `struct net_device *` argument naming the device
    /// the packet is on at this hook (preferred over `skb->dev`), if any.
    pub dev_arg: Option<u8>,
    /// What happens to the skb here.
    pub role: Role,
    /// False when only selected by its own name.
    pub default: bool,
    /// Name of the immediate parent group.
    pub group: String,
    /// Optional description.
    pub desc: Option<String>,
    /// Position among all leaves in tree order.
    pub index: usize,
}

/// A named group of tracers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Unique name.
    pub name: String,
    /// One-line description.
    pub desc: String,
    /// False when only selected by its own name.
    pub default: bool,
    /// Child groups and leaves, in file order.
    pub children: Vec<Node>,
}

/// A child of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A sub-group.
    Group(Group),
    /// A leaf, by its index in [`TracerTree::leaves`].
    Leaf(usize),
}

/// A node found by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A group.
    Group(&'a Group),
    /// A leaf.
    Leaf(&'a Leaf),
}

/// The parsed and validated tracer tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerTree {
    root: Group,
    leaves: Vec<Leaf>,
}

const GROUP_KEYS: &[&str] = &["name", "desc", "children", "default"];
const LEAF_KEYS: &[&str] = &[
    "func", "tp", "name", "skb", "sk", "dev", "role", "default", "desc",
];

fn invalid(node: &str, problem: impl Into<String>) -> TreeError {
    TreeError::Invalid {
        node: node.to_string(),
        problem: problem.into(),
    }
}

struct Builder {
    names: HashSet<String>,
    leaves: Vec<Leaf>,
}

fn get_str<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    node: &str,
) -> Result<Option<&'v str>, TreeError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(node, format!("\"{key}\" must be a string"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, node: &str) -> Result<Option<bool>, TreeError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(node, format!("\"{key}\" must be true or false"))),
    }
}

fn get_arg(obj: &Map<String, Value>, key: &str, node: &str) -> Result<Option<u8>, TreeError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_ARG_INDEX => Ok(u8::try_from(n).ok()),
            _ => Err(invalid(
                node,
                format!("\"{key}\" must be an argument index from 0 to {MAX_ARG_INDEX}, got {v}"),
            )),
        },
    }
}

fn check_keys(
    obj: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
    node: &str,
) -> Result<(), TreeError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(invalid(
                node,
                format!(
                    "unknown key \"{k}\"; a {what} may only have {}",
                    allowed
                        .iter()
                        .map(|a| format!("\"{a}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl Builder {
    fn claim_name(&mut self, name: &str, node: &str) -> Result<(), TreeError> {
        if name.is_empty() {
            return Err(invalid(node, "\"name\" is empty; give it a name"));
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == '?')
        {
            return Err(invalid(
                node,
                "names may not contain spaces, ',' or '?' (they are used in -t lists); rename it",
            ));
        }
        if !self.names.insert(name.to_string()) {
            return Err(invalid(
                node,
                format!("the name '{name}' is used twice; names must be unique across the tree"),
            ));
        }
        Ok(())
    }

    fn node(&mut self, v: &Value, parent: &str, pos: usize) -> Result<Node, TreeError> {
        let anon = format!("child #{} of '{parent}'", pos + 1);
        let Value::Object(obj) = v else {
            return Err(invalid(
                &anon,
                "is not a JSON object; write {\"name\": ...}",
            ));
        };
        let is_group = obj.contains_key("children");
        let is_leaf = obj.contains_key("func") || obj.contains_key("tp");
        match (is_group, is_leaf) {
            (true, true) => {
                let node = get_str(obj, "name", &anon)?.unwrap_or(&anon);
                Err(invalid(
                    node,
                    "has \"children\" and \"func\"/\"tp\"; a node is either a group or a leaf",
                ))
            }
            (true, false) => Ok(Node::Group(self.group(obj, &anon)?)),
            (false, true) => Ok(Node::Leaf(self.leaf(obj, parent, &anon)?)),
            (false, false) => {
                let node = get_str(obj, "name", &anon)?.unwrap_or(&anon);
                Err(invalid(
                    node,
                    "is neither a group (needs \"children\") nor a leaf (needs \"func\" or \"tp\")",
                ))
            }
        }
    }

    fn group(&mut self, obj: &Map<String, Value>, anon: &str) -> Result<Group, TreeError> {
        let name = match get_str(obj, "name", anon)? {
            Some(n) => n,
            None => return Err(invalid(anon, "group has no \"name\"; add one")),
        };
        let node = format!("group '{name}'");
        check_keys(obj, GROUP_KEYS, "group", &node)?;
        self.claim_name(name, &node)?;
        let desc = get_str(obj, "desc", &node)?.unwrap_or("").to_string();
        let default = get_bool(obj, "default", &node)?.unwrap_or(true);
        let Some(Value::Array(items)) = obj.get("children") else {
            return Err(invalid(&node, "\"children\" must be a list of nodes"));
        };
        let mut children = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            children.push(self.node(item, name, i)?);
        }
        Ok(Group {
            name: name.to_string(),
            desc,
            default,
            children,
        })
    }

    fn leaf(
        &mut self,
        obj: &Map<String, Value>,
        parent: &str,
        anon: &str,
    ) -> Result<usize, TreeError> {
        let func = get_str(obj, "func", anon)?;
        let tp = get_str(obj, "tp", anon)?;
        let explicit = get_str(obj, "name", anon)?;
        let label = explicit.or(func).or(tp).unwrap_or(anon);
        let node = format!("tracer '{label}'");
        check_keys(obj, LEAF_KEYS, "leaf", &node)?;
        let (kind, implied) = match (func, tp) {
            (Some(_), Some(_)) => {
                return Err(invalid(&node, "has both \"func\" and \"tp\"; keep exactly one"));
            }
            (Some(f), None) => {
                if f.is_empty() {
                    return Err(invalid(&node, "\"func\" is empty; name a kernel function"));
                }
                (LeafKind::Function { func: f.to_string() }, f)
            }
            (None, Some(t)) => match t.split_once('/') {
                Some((c, e)) if !c.is_empty() && !e.is_empty() && !e.contains('/') => (
                    LeafKind::Tracepoint {
                        category: c.to_string(),
                        event: e.to_string(),
                    },
                    e,
                ),
                _ => {
                    return Err(invalid(
                        &node,
                        format!("\"tp\" is \"{t}\"; write it as \"category/event\", e.g. \"net/netif_receive_skb\""),
                    ))
                }
            },
            (None, None) => return Err(invalid(&node, "needs \"func\" or \"tp\"")),
        };
        let name = explicit.unwrap_or(implied);
        self.claim_name(name, &node)?;
        let Some(skb_arg) = get_arg(obj, "skb", &node)? else {
            return Err(invalid(
                &node,
                "has no \"skb\"; give the 0-based index of its struct sk_buff * argument",
            ));
        };
        let sk_arg = get_arg(obj, "sk", &node)?;
        let dev_arg = get_arg(obj, "dev", &node)?;
        let role = match get_str(obj, "role", &node)? {
            None => Role::Normal,
            Some("consume") => Role::Consume,
            Some("drop") => Role::Drop,
            Some("clone") => Role::Clone,
            Some(other) => {
                return Err(invalid(
                    &node,
                    format!("role \"{other}\" is not one of \"consume\", \"drop\", \"clone\""),
                ))
            }
        };
        let index = self.leaves.len();
        self.leaves.push(Leaf {
            name: name.to_string(),
            kind,
            skb_arg,
            sk_arg,
            dev_arg,
            role,
            default: get_bool(obj, "default", &node)?.unwrap_or(true),
            group: parent.to_string(),
            desc: get_str(obj, "desc", &node)?.map(str::to_string),
            index,
        });
        Ok(index)
    }
}

/// Where `text` first nests JSON arrays and objects deeper than `max`, as
/// a 1-based (line, column); brackets inside strings do not count. Run
/// before parsing, so that deep input is neither recursed into nor called a
/// syntax error.
fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some((line, i - line_start + 1));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            _ => {}
        }
    }
    None
}

impl TracerTree {
    /// Parses and validates the text of `tracer.json` (at most
    /// [`MAX_FILE_BYTES`] long and [`MAX_GROUP_DEPTH`] groups deep).
    pub fn parse(text: &str) -> Result<TracerTree, TreeError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(TreeError::TooLarge(text.len()));
        }
        if let Some((line, column)) = too_deep(text, MAX_JSON_DEPTH) {
            return Err(TreeError::TooDeep { line, column });
        }
        let v: Value = serde_json::from_str(text).map_err(|e| TreeError::Json(e.to_string()))?;
        let Value::Object(obj) = &v else {
            return Err(invalid(
                "the root",
                "is not a JSON object; it must be the group \"all\"",
            ));
        };
        if !obj.contains_key("children") {
            return Err(invalid(
                "the root",
                "must be a group (with \"children\") named \"all\"",
            ));
        }
        let mut b = Builder {
            names: HashSet::new(),
            leaves: Vec::new(),
        };
        let root = b.group(obj, "the root")?;
        if root.name != "all" {
            return Err(invalid(
                &format!("group '{}'", root.name),
                "the root group must be named \"all\"; rename it",
            ));
        }
        Ok(TracerTree {
            root,
            leaves: b.leaves,
        })
    }

    /// The root group (`all`).
    pub fn root(&self) -> &Group {
        &self.root
    }

    /// All leaves in tree order.
    pub fn leaves(&self) -> impl Iterator<Item = &Leaf> + '_ {
        self.leaves.iter()
    }

    /// The leaf at a tree-order index.
    pub fn leaf(&self, index: usize) -> Option<&Leaf> {
        self.leaves.get(index)
    }

    /// The group or leaf with this name.
    pub fn find(&self, name: &str) -> Option<Found<'_>> {
        fn walk<'a>(g: &'a Group, leaves: &'a [Leaf], name: &str) -> Option<Found<'a>> {
            if g.name == name {
                return Some(Found::Group(g));
            }
            for c in &g.children {
                let hit = match c {
                    Node::Group(sub) => walk(sub, leaves, name),
                    Node::Leaf(i) => leaves.get(*i).filter(|l| l.name == name).map(Found::Leaf),
                };
                if hit.is_some() {
                    return hit;
                }
            }
            None
        }
        walk(&self.root, &self.leaves, name)
    }

    /// The leaves selected by `-t` names, deduplicated, in tree order.
    ///
    /// A group selects its descendant leaves except those at or under a
    /// `"default": false` node; such a node is selected only by its own name.
    pub fn select(&self, names: &[&str]) -> Result<Vec<&Leaf>, TreeError> {
        fn mark(g: &Group, chosen: &mut [bool]) {
            for c in &g.children {
                match c {
                    Node::Group(sub) if sub.default => mark(sub, chosen),
                    Node::Group(_) => {}
                    Node::Leaf(i) => {
                        if let Some(slot) = chosen.get_mut(*i) {
                            // leaves' default is checked by the caller's filter below
                            *slot = true;
                        }
                    }
                }
            }
        }
        let mut chosen = vec![false; self.leaves.len()];
        let mut direct = vec![false; self.leaves.len()];
        for &name in names {
            match self.find(name) {
                Some(Found::Group(g)) => mark(g, &mut chosen),
                Some(Found::Leaf(l)) => {
                    if let Some(slot) = direct.get_mut(l.index) {
                        *slot = true;
                    }
                }
                None => return Err(TreeError::Unknown(name.to_string())),
            }
        }
        Ok(self
            .leaves
            .iter()
            .filter(|l| direct[l.index] || (chosen[l.index] && l.default))
            .collect())
    }

    /// The `-t ?` listing; `status` may add a note after a leaf's name.
    pub fn render(&self, status: impl Fn(&Leaf) -> Option<String>) -> String {
        fn walk(
            out: &mut String,
            g: &Group,
            leaves: &[Leaf],
            depth: usize,
            status: &dyn Fn(&Leaf) -> Option<String>,
        ) {
            let indent = depth * 4;
            let _ = write!(out, "{:indent$}{}", "", g.name);
            if !g.desc.is_empty() {
                let _ = write!(out, ": {}", g.desc);
            }
            if !g.default {
                out.push_str(" [off by default]");
            }
            out.push('\n');
            for c in &g.children {
                match c {
                    Node::Group(sub) => walk(out, sub, leaves, depth + 1, status),
                    Node::Leaf(i) => {
                        let Some(l) = leaves.get(*i) else { continue };
                        let _ = write!(out, "{:w$}{}", "", l.name, w = indent + 4);
                        if !l.default {
                            out.push_str(" [off by default]");
                        }
                        if let Some(s) = status(l) {
                            out.push_str("  ");
                            out.push_str(&s);
                        }
                        out.push('\n');
                    }
                }
            }
        }
        let mut out = String::from(
            "available tracer:\n---------------------------------------------------\n\n",
        );
        walk(&mut out, &self.root, &self.leaves, 0, &status);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = r#"{
      "name": "all", "desc": "trace the whole kernel network stack",
      "children": [
        {"name": "link", "desc": "link layer (L2) of the network stack", "children": [
          {"name": "link-in", "desc": "link layer (L2) of packet in", "children": [
            {"func": "napi_gro_receive", "skb": 1},
            {"tp": "net/netif_receive_skb", "skb": 0},
            {"func": "dev_gro_receive", "skb": 1, "default": false}
          ]}
        ]},
        {"name": "life", "desc": "skb lifetime", "children": [
          {"func": "skb_clone", "skb": 0, "role": "clone"},
          {"name": "kfree_skb", "tp": "skb/kfree_skb", "skb": 0, "role": "drop"},
          {"tp": "skb/consume_skb", "skb": 0, "role": "consume"}
        ]},
        {"name": "tcp", "desc": "tcp layer", "default": false, "children": [
          {"func": "tcp_v4_rcv", "skb": 0},
          {"func": "tcp_sendmsg_locked", "skb": 3, "sk": 0, "dev": 2, "desc": "no headers yet"}
        ]}
      ]
    }"#;

    fn tree() -> TracerTree {
        TracerTree::parse(TREE).expect("test tree is valid")
    }

    fn names(v: &[&Leaf]) -> Vec<String> {
        v.iter().map(|l| l.name.clone()).collect()
    }

    #[test]
    fn parses_leaves() {
        let t = tree();
        let all: Vec<&Leaf> = t.leaves().collect();
        assert_eq!(
            names(&all),
            vec![
                "napi_gro_receive",
                "netif_receive_skb",
                "dev_gro_receive",
                "skb_clone",
                "kfree_skb",
                "consume_skb",
                "tcp_v4_rcv",
                "tcp_sendmsg_locked"
            ]
        );
        let l = all[1];
        assert_eq!(
            l.kind,
            LeafKind::Tracepoint {
                category: "net".into(),
                event: "netif_receive_skb".into()
            }
        );
        assert_eq!(l.group, "link-in");
        assert_eq!(l.index, 1);
        assert_eq!(all[0].skb_arg, 1);
        assert_eq!(all[3].role, Role::Clone);
        assert_eq!(all[4].role, Role::Drop);
        assert_eq!(all[5].role, Role::Consume);
        assert_eq!(all[0].role, Role::Normal);
        assert_eq!(all[7].sk_arg, Some(0));
        assert_eq!(all[7].dev_arg, Some(2));
        assert_eq!(all[0].dev_arg, None);
        assert_eq!(all[7].skb_arg, 3);
        assert_eq!(all[7].desc.as_deref(), Some("no headers yet"));
        assert!(!all[2].default);
        assert!(
            matches!(t.find("link"), Some(Found::Group(g)) if g.desc.starts_with("link layer"))
        );
        assert!(matches!(t.find("kfree_skb"), Some(Found::Leaf(l)) if l.group == "life"));
        assert_eq!(t.find("nope"), None);
        assert_eq!(t.root().name, "all");
    }

    #[test]
    fn select_all_skips_default_false() {
        let t = tree();
        assert_eq!(
            names(&t.select(&["all"]).expect("ok")),
            vec![
                "napi_gro_receive",
                "netif_receive_skb",
                "skb_clone",
                "kfree_skb",
                "consume_skb"
            ]
        );
    }

    #[test]
    fn select_by_name_and_dedup_in_tree_order() {
        let t = tree();
        assert_eq!(
            names(
                &t.select(&["kfree_skb", "link-in", "napi_gro_receive"])
                    .expect("ok")
            ),
            vec!["napi_gro_receive", "netif_receive_skb", "kfree_skb"]
        );
        // an off-by-default leaf or group is selected by its own name
        assert_eq!(
            names(&t.select(&["dev_gro_receive"]).expect("ok")),
            vec!["dev_gro_receive"]
        );
        assert_eq!(
            names(&t.select(&["tcp", "life"]).expect("ok")),
            vec![
                "skb_clone",
                "kfree_skb",
                "consume_skb",
                "tcp_v4_rcv",
                "tcp_sendmsg_locked"
            ]
        );
        assert!(t.select(&[]).expect("ok").is_empty());
    }

    #[test]
    fn select_unknown() {
        let err = tree().select(&["link", "ip_rcvv"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown tracer 'ip_rcvv'; run 'nettrace -t ?' to list them"
        );
    }

    #[test]
    fn render_listing() {
        let t = tree();
        let out = t.render(|l| match &l.kind {
            LeafKind::Tracepoint { category, event } => {
                Some(format!("(tracepoint {category}/{event})"))
            }
            LeafKind::Function { func } if func == "tcp_v4_rcv" => {
                Some("(unavailable: not in this kernel)".to_string())
            }
            LeafKind::Function { .. } => None,
        });
        assert_eq!(
            out,
            "available tracer:
---------------------------------------------------

all: trace the whole kernel network stack
    link: link layer (L2) of the network stack
        link-in: link layer (L2) of packet in
            napi_gro_receive
            netif_receive_skb  (tracepoint net/netif_receive_skb)
            dev_gro_receive [off by default]
    life: skb lifetime
        skb_clone
        kfree_skb  (tracepoint skb/kfree_skb)
        consume_skb  (tracepoint skb/consume_skb)
    tcp: tcp layer [off by default]
        tcp_v4_rcv  (unavailable: not in this kernel)
        tcp_sendmsg_locked
"
        );
    }

    fn err(text: &str) -> String {
        TracerTree::parse(text).unwrap_err().to_string()
    }

    fn wrap(children: &str) -> String {
        format!(r#"{{"name": "all", "desc": "d", "children": [{children}]}}"#)
    }

    #[test]
    fn validation_errors_name_the_node() {
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv", "skb": 0}, {"name": "ip_rcv", "tp": "a/b", "skb": 0}"#)),
            "tracer.json: tracer 'ip_rcv': the name 'ip_rcv' is used twice; names must be unique across the tree"
        );
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv", "tp": "net/x", "skb": 0}"#)),
            "tracer.json: tracer 'ip_rcv': has both \"func\" and \"tp\"; keep exactly one"
        );
        assert_eq!(
            err(&wrap(r#"{"tp": "netif_receive_skb", "skb": 0}"#)),
            "tracer.json: tracer 'netif_receive_skb': \"tp\" is \"netif_receive_skb\"; write it as \"category/event\", e.g. \"net/netif_receive_skb\""
        );
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv", "skb": 12}"#)),
            "tracer.json: tracer 'ip_rcv': \"skb\" must be an argument index from 0 to 11, got 12"
        );
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv", "skb": 0, "sk": -1}"#)),
            "tracer.json: tracer 'ip_rcv': \"sk\" must be an argument index from 0 to 11, got -1"
        );
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv"}"#)),
            "tracer.json: tracer 'ip_rcv': has no \"skb\"; give the 0-based index of its struct sk_buff * argument"
        );
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv", "skb": 0, "role": "free"}"#)),
            "tracer.json: tracer 'ip_rcv': role \"free\" is not one of \"consume\", \"drop\", \"clone\""
        );
        assert_eq!(
            err(&wrap(r#"{"func": "ip_rcv", "skb": 0, "stack": true}"#)),
            "tracer.json: tracer 'ip_rcv': unknown key \"stack\"; a leaf may only have \"func\", \"tp\", \"name\", \"skb\", \"sk\", \"dev\", \"role\", \"default\", \"desc\""
        );
        assert_eq!(
            err(&wrap(r#"{"name": "ip", "desc": "x", "children": [], "hidden": 1}"#)),
            "tracer.json: group 'ip': unknown key \"hidden\"; a group may only have \"name\", \"desc\", \"children\", \"default\""
        );
        assert_eq!(
            err(&wrap(r#"{"name": "ip", "children": [{"name": "x"}]}"#)),
            "tracer.json: x: is neither a group (needs \"children\") nor a leaf (needs \"func\" or \"tp\")"
        );
        assert_eq!(
            err(&wrap(r#"{"name": "ip", "children": [3]}"#)),
            "tracer.json: child #1 of 'ip': is not a JSON object; write {\"name\": ...}"
        );
        assert_eq!(
            err(&wrap(r#"{"name": "ip", "children": [], "default": "no"}"#)),
            "tracer.json: group 'ip': \"default\" must be true or false"
        );
        assert_eq!(
            err(&wrap(r#"{"name": "a b", "children": []}"#)),
            "tracer.json: group 'a b': names may not contain spaces, ',' or '?' (they are used in -t lists); rename it"
        );
        assert_eq!(
            err(&wrap(r#"{"name": "ip", "children": [{"func": "f", "skb": 0, "children": []}]}"#)),
            "tracer.json: child #1 of 'ip': has \"children\" and \"func\"/\"tp\"; a node is either a group or a leaf"
        );
        assert_eq!(
            err(r#"{"name": "root", "children": []}"#),
            "tracer.json: group 'root': the root group must be named \"all\"; rename it"
        );
        assert!(err("{\"name\": ").starts_with("tracer.json is not valid JSON (EOF while parsing"));
    }

    /// A tree whose groups nest `levels` deep (the root is level 1), with
    /// a leaf in the deepest one.
    fn nested(levels: usize) -> String {
        let mut s = String::from(r#"{"name": "all", "children": ["#);
        for i in 2..=levels {
            s.push_str(&format!(r#"{{"name": "g{i}", "children": ["#));
        }
        s.push_str(r#"{"tp": "net/netif_rx", "skb": 0}"#);
        for _ in 0..levels {
            s.push_str("]}");
        }
        s
    }

    #[test]
    fn depth_is_bounded_with_its_own_message() {
        let t = TracerTree::parse(&nested(MAX_GROUP_DEPTH)).expect("32 levels are fine");
        assert_eq!(t.leaves().count(), 1);
        assert_eq!(t.leaves().next().map(|l| l.group.as_str()), Some("g32"));
        // one level more: the 33rd group's children list is the first bracket too deep
        let text = nested(MAX_GROUP_DEPTH + 1);
        let column = text.find(r#""g33""#).expect("g33") + r#""g33", "children": ["#.len();
        assert_eq!(
            err(&text),
            format!("tracer.json is nested too deeply at line 1, column {column}: at most 32 levels of groups; flatten the tree")
        );
        // far past serde_json's own recursion limit: still not a syntax error
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(err(&deep).starts_with("tracer.json is nested too deeply at line 1, column 66:"));
        // brackets in strings do not count, escaped quotes do not end strings
        let desc = format!(
            r#"{{"name": "all", "desc": "\"{}", "children": []}}"#,
            "[".repeat(200)
        );
        assert!(TracerTree::parse(&desc).is_ok());
        // a leaf with a deep value is refused for depth, on its line
        let lines = format!("{{\"name\": \"all\",\n \"x\": {}", "[".repeat(70));
        assert!(err(&lines).starts_with("tracer.json is nested too deeply at line 2, column 71:"));
    }

    #[test]
    fn size_is_bounded() {
        let big = format!("{}{}", " ".repeat(MAX_FILE_BYTES), wrap(""));
        assert_eq!(
            err(&big),
            format!(
                "tracer.json is larger than 1 MiB ({} bytes); a tracer tree is a few KiB of JSON",
                big.len()
            )
        );
        let fits = format!(
            "{}{}",
            " ".repeat(MAX_FILE_BYTES - wrap("").len()),
            wrap("")
        );
        assert!(TracerTree::parse(&fits).is_ok());
    }

    #[test]
    fn group_name_clash_with_leaf() {
        assert_eq!(
            err(&wrap(r#"{"name": "ip_rcv", "children": [{"func": "ip_rcv", "skb": 0}]}"#)),
            "tracer.json: tracer 'ip_rcv': the name 'ip_rcv' is used twice; names must be unique across the tree"
        );
    }
}
