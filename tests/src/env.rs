//! The environment the tests need: root, command-line tools, the binary under test.

use std::path::PathBuf;

/// The tools every network test uses.
pub const DEFAULT_TOOLS: &[&str] = &["ip", "iptables", "ping", "bpftool"];

/// Panics unless the effective user is root. These tests must not be skipped silently.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        panic!(
            "nettrace integration tests need root (euid 0) to create network namespaces and \
             load eBPF programs; current euid is {euid}. Run them as root, e.g. `sudo ./dev test`."
        );
    }
}

/// Debian package that provides a tool, for the failure message.
fn package_for(tool: &str) -> &'static str {
    match tool {
        "ip" => "iproute2",
        "iptables" => "iptables",
        "ping" => "iputils-ping",
        "bpftool" => "bpftool (Ubuntu: linux-tools-common / linux-tools-generic)",
        "sh" => "dash",
        "tshark" => "tshark",
        _ => "the package that provides it",
    }
}

/// Finds `tool` in `$PATH` (and the sbin directories, which a non-login root shell may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Panics naming every missing tool and the package to install (`./dev deps` installs all).
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| find_tool(t).is_none())
        .map(|t| format!("`{t}` (install {})", package_for(t)))
        .collect();
    if !missing.is_empty() {
        panic!(
            "missing tools needed by the nettrace integration tests: {}. \
             `./dev deps` installs them on Debian/Ubuntu.",
            missing.join(", ")
        );
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// The binary under test: `$NETTRACE_BIN`, else `<workspace>/target/debug/nettrace`.
/// Panics with a clear message if it does not exist.
pub fn nettrace_bin() -> PathBuf {
    let bin = match std::env::var_os("NETTRACE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_dir().join("target/debug/nettrace"),
    };
    if !bin.is_file() {
        panic!(
            "nettrace binary not found at {}: build it first: cargo build -p nettrace \
             (or set NETTRACE_BIN to the binary to test)",
            bin.display()
        );
    }
    bin
}

/// The kubectl plugin under test: `$KUBECTL_NETTRACE_BIN`, else
/// `<workspace>/target/debug/kubectl-nettrace`. Panics with a clear message if it does not
/// exist.
pub fn plugin_bin() -> PathBuf {
    let bin = match std::env::var_os("KUBECTL_NETTRACE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_dir().join("target/debug/kubectl-nettrace"),
    };
    if !bin.is_file() {
        panic!(
            "kubectl-nettrace not found at {}: build it first: cargo build -p kubectl-nettrace \
             (or set KUBECTL_NETTRACE_BIN to the binary to test)",
            bin.display()
        );
    }
    bin
}
