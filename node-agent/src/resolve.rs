//! From command-line values to the kernel filter: parsing (pure, in common)
//! and the lookups that need the system (netns paths, interface names).

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Context, Result};
use nettrace_common::filter::{parse_addr, parse_netns_arg, parse_port, parse_proto};
use nettrace_common::{Filter, NetnsArg};

use crate::cli::Cli;

/// Parses and checks every filter option; no system lookups yet.
pub fn filter_from_cli(cli: &Cli) -> Result<Filter> {
    let port = |opt: &Option<String>, name: &str| -> Result<Option<u16>> {
        opt.as_deref()
            .map(|v| parse_port(v).with_context(|| format!("--{name}")))
            .transpose()
    };
    let addr = |opt: &Option<String>, name: &str| {
        opt.as_deref()
            .map(|v| parse_addr(v).with_context(|| format!("--{name}")))
            .transpose()
    };
    let filter = Filter {
        saddr: addr(&cli.saddr, "saddr")?,
        daddr: addr(&cli.daddr, "daddr")?,
        addr: addr(&cli.addr, "addr")?,
        proto: cli
            .proto
            .as_deref()
            .map(parse_proto)
            .transpose()
            .context("--proto")?,
        sport: port(&cli.sport, "sport")?,
        dport: port(&cli.dport, "dport")?,
        port: port(&cli.port, "port")?,
        netns: None,
        ifindex: None,
        pid: cli.pid,
        skb_mode: cli.skb_mode,
        scope_map: false,
        follow: false,
    };
    filter.validate()?;
    if let Some(netns) = &cli.netns {
        // Checked here so that a bad value fails before anything is loaded.
        if let NetnsArg::Path(p) = parse_netns_arg(netns) {
            File::open(&p).with_context(|| format!("--netns: cannot open {p}"))?;
        }
    }
    if cli.pid == Some(0) {
        bail!("--pid must be a process id above 0");
    }
    Ok(filter)
}

/// Fills the netns inode and interface index of the filter.
pub fn resolve_kernel_scopes(cli: &Cli, filter: &mut Filter) -> Result<()> {
    let netns_path = match cli.netns.as_deref().map(parse_netns_arg) {
        None => None,
        Some(NetnsArg::Inode(ino)) => {
            filter.netns = Some(ino);
            None
        }
        Some(NetnsArg::Path(p)) => {
            let meta =
                std::fs::metadata(&p).with_context(|| format!("--netns: cannot open {p}"))?;
            filter.netns = Some(u32::try_from(meta.ino()).context("--netns: inode out of range")?);
            Some(p)
        }
    };
    if let Some(name) = &cli.ifname {
        let index = match (&netns_path, filter.netns) {
            (Some(path), _) => ifindex_in_netns(name, path)?,
            (None, Some(_)) => bail!("--ifname with --netns needs the namespace as a path (/proc/PID/ns/net or /run/netns/NAME), not an inode"),
            (None, None) => ifindex(name)?,
        };
        filter.ifindex = Some(index);
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("--ifname contains a NUL byte")?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("--ifname: no interface named {name}");
    }
    Ok(index)
}

/// Looks an interface up inside another netns, from a short-lived thread
/// (a network namespace is a per-thread property).
fn ifindex_in_netns(name: &str, netns: &str) -> Result<u32> {
    let file = File::open(netns).with_context(|| format!("--netns: cannot open {netns}"))?;
    let name = name.to_string();
    let netns_owned = netns.to_string();
    std::thread::spawn(move || -> Result<u32> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter network namespace {netns_owned}"))?;
        ifindex(&name).with_context(|| format!("in network namespace {netns_owned}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("interface lookup thread panicked"))?
}
