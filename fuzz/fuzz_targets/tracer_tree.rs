//! The tracer file (`tracer.json`, `--tracer-file`): `TracerTree::parse`,
//! and on success `find`, `select` and `render`.
//!
//! Checks: every leaf is found by its name; selecting the root returns
//! leaves in tree order without duplicates; unknown names are errors; the
//! listing names every leaf.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettrace_common::{Found, TracerTree, TreeError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tree) = TracerTree::parse(text) else {
        return;
    };
    let leaves: Vec<_> = tree.leaves().collect();
    for (i, l) in leaves.iter().enumerate() {
        assert_eq!(l.index, i);
        assert!(matches!(tree.find(&l.name), Some(Found::Leaf(f)) if f.index == i));
        assert!(tree.leaf(i).is_some());
    }
    let all = tree.select(&["all"]).expect("the root is selectable");
    assert!(all.windows(2).all(|w| w[0].index < w[1].index));
    // every name at once, twice: still deduplicated and ordered
    let mut names: Vec<&str> = leaves.iter().map(|l| l.name.as_str()).collect();
    names.push("all");
    names.extend(leaves.iter().map(|l| l.name.as_str()));
    let picked = tree.select(&names).expect("known names");
    assert_eq!(picked.len(), leaves.len());
    assert!(picked.windows(2).all(|w| w[0].index < w[1].index));
    let missing = "\u{1}no such tracer\u{1}";
    assert_eq!(
        tree.select(&[missing]),
        Err(TreeError::Unknown(missing.to_string()))
    );
    let listing = tree.render(|l| (l.index % 2 == 0).then(|| format!("#{}", l.index)));
    for l in &leaves {
        assert!(listing.contains(l.name.as_str()));
    }
});
