//! Checking which eBPF programs are loaded, by id, so that other tests' programs don't confuse us.

use std::process::Command;
use std::time::{Duration, Instant};

/// Program ids from `-v` stderr: every `prog id <N>` occurrence.
pub fn prog_ids_from_verbose(stderr_lines: &[String]) -> Vec<u32> {
    let mut ids = Vec::new();
    for line in stderr_lines {
        let mut rest = line.as_str();
        while let Some(i) = rest.find("prog id ") {
            rest = &rest[i + "prog id ".len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(id) = digits.parse() {
                ids.push(id);
            }
        }
    }
    ids
}

/// Whether a program with this id is loaded (`bpftool prog show id N` succeeds).
pub fn prog_exists(id: u32) -> bool {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run bpftool: {e}"));
    out.status.success()
}

/// Asserts that none of `ids` is loaded, allowing up to `grace` for deferred freeing.
pub fn assert_progs_gone(ids: &[u32], grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        let left: Vec<u32> = ids.iter().copied().filter(|&id| prog_exists(id)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("programs still loaded {grace:?} after nettrace exited: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let lines = vec![
            "attached netif_rx (tracepoint net/netif_rx), prog id 42".to_string(),
            "unavailable ip_rcv: kprobes not supported".to_string(),
            "prog id 7 and prog id 8".to_string(),
        ];
        assert_eq!(prog_ids_from_verbose(&lines), vec![42, 7, 8]);
    }
}
