//! `nettrace`: follow packets through the Linux network stack with eBPF.

mod agent;
mod cli;
mod containers;
mod kfunc;
mod kprobe_multi;
mod line_info;
mod loader;
mod netlink;
mod nft_rules;
mod nft_trace;
mod output;
mod pcap;
mod plan;
mod resolve;
mod session;
mod sink;
mod slots;
mod symbols;
mod system;
mod watch;

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nettrace_common::{Leaf, LeafKind, Role, TraceConfig, TracerTree};

use crate::cli::{Cli, HostArgs};
use crate::plan::{backend_status, Backend, BackendChoice, Plan};
use crate::session::Views;
use crate::symbols::Symbols;
use crate::system::Kernel;

/// The tracer tree shipped with nettrace.
const BUILTIN_TRACERS: &str = include_str!("../../tracer.json");

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nettrace: {}", cli::one_line_error(&e));
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(cli::Command::Agent)) {
        return agent::main();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nettrace: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// The tracer tree: `--tracer-file`, else the built-in one.
fn load_tree(tracer_file: Option<&Path>) -> Result<TracerTree> {
    match tracer_file {
        Some(path) => {
            let text = resolve::read_tracer_file(path)?;
            TracerTree::parse(&text).with_context(|| format!("tracer file {}", path.display()))
        }
        None => Ok(
            TracerTree::parse(BUILTIN_TRACERS).context("the built-in tracer.json is invalid")?
        ),
    }
}

fn run(cli: Cli) -> Result<()> {
    let tree = load_tree(cli.host.tracer_file.as_deref())?;
    if cli.trace.wants_tracer_list() {
        print_tracer_list(&tree, cli.trace.backend);
        return Ok(());
    }
    // Everything the user typed is checked before anything is loaded: the
    // shared options by the validator kubectl nettrace and the agent use.
    let config = cli.trace.validate(&tree)?;
    cli.trace.check_pcap(cli.host.pcap.is_some())?;
    let snaplen = cli.host.pcap.as_ref().map(|_| config.snaplen);
    let mut prepared = prepare(&config, &cli.host, &tree, &[], snaplen)?;
    let rules = if config.nft_trace {
        use std::os::fd::AsFd;
        let ns = match &prepared.scopes.netns {
            Some(h) => vec![(
                format!("netns {}", h.label),
                nft_trace::Netns::Fd(h.fd.as_fd()),
            )],
            None => vec![("this namespace".to_string(), nft_trace::Netns::Current)],
        };
        Some(nft_rules::RuleFinder::start(&ns, &config.filter)?)
    } else {
        None
    };
    watch::start(std::mem::take(&mut prepared.scopes));
    let pcap = match &cli.host.pcap {
        Some(path) => Some(pcap::Pcap::open(
            path,
            config.snaplen,
            agent::read_clocks(),
        )?),
        None => None,
    };
    eprintln!("begin tracing......");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // `--pcap -`: stdout carries the pcap-ng stream instead of the lines.
    let to_stdout = cli.host.pcap.as_deref() == Some(Path::new("-"));
    let sink = sink::Lines::new(cli.host.output, config.text_options(), to_stdout);
    runtime
        .block_on(session::run(
            prepared.loaded,
            prepared.plan,
            prepared.symbols,
            prepared.views,
            sink,
            session::Control::default(),
            rules,
            pcap,
        ))
        .map(|_| ())?;
    match watch::vanished_message() {
        Some(msg) => bail!("{msg}"),
        None => Ok(()),
    }
}

/// Everything a session needs, attached and ready.
pub struct Prepared {
    /// The loaded and attached programs and their maps.
    pub loaded: loader::Loaded,
    /// What was planned for each tracer.
    pub plan: Plan,
    /// Kernel symbols and drop reasons.
    pub symbols: Symbols,
    /// How events are grouped and when to stop.
    pub views: Views,
    /// What --netns, --ifname and --pid named, held while tracing.
    pub scopes: resolve::Scopes,
}

/// Loads and attaches the tracers of a checked configuration: the shared
/// options (from the command line, or from the agent's spec) and the host's
/// own (`tree` is where the configuration's leaves come from). With a `scope` for the kernel filter (the agent's pods: keys
/// `netns << 32 | ifindex`, ifindex 0 for the whole namespace), a packet
/// that matched in it is followed wherever it goes next. With `snaplen`,
/// the kernel copies that many bytes of each matched packet (`--pcap`).
pub fn prepare(
    config: &TraceConfig<'_>,
    host: &HostArgs,
    tree: &TracerTree,
    scope: &[u64],
    snaplen: Option<u16>,
) -> Result<Prepared> {
    resolve::check_host_args(host)?;
    let mut filter = config.filter.clone();
    filter.pid = host.pid;
    // --detail shows the skbs' conntrack entries; without it the kernel
    // side does not even read them (the verifier drops the code).
    filter.conntrack = config.detail;
    filter.snaplen = snaplen;
    if !scope.is_empty() {
        filter.scope_map = true;
        filter.follow = true;
    }
    let limits = loader::Limits {
        ringbuf_bytes: ringbuf_size(host.ringbuf_kb)?,
        rate: config.rate_limit,
    };

    system::require_root()?;
    system::require_btf()?;
    let scopes = resolve::resolve_kernel_scopes(host, &mut filter)?;
    let probing = std::time::Instant::now();
    let mut kernel = Kernel::probe(&function_names(&config.leaves));
    let probe_time = probing.elapsed();
    if kernel.tracefs.is_none() {
        system::tracefs()?;
    }
    let btf = kernel
        .btf
        .as_ref()
        .context("cannot read the kernel's BTF from /sys/kernel/btf/vmlinux")?;

    if let Some(path) = &host.tracer_file {
        resolve::check_tracepoint_leaves(&kernel, tree)
            .with_context(|| format!("tracer file {}", path.display()))?;
    }
    let mut plan = Plan::build(
        &kernel,
        &config.leaves,
        config.backend,
        config.ret,
        |leaf| config.wants_stack(leaf),
    );
    plan.raw_tracepoints = config.raw_tp;
    plan.probe_read = config.probe_read;
    plan.single_kprobes = config.no_kprobe_multi;
    let loaded = loader::load_and_attach(&mut plan, btf, &filter, limits, scope)?;
    report_plan(config, host.verbose, &plan, &loaded);
    if host.verbose && config.detail {
        eprintln!("{}", conntrack_note(btf));
    }
    if host.verbose {
        let phases: Vec<String> = std::iter::once(("kernel probe", probe_time))
            .chain(loaded.phases.iter().copied())
            .map(|(name, d)| format!("{name} {} ms", d.as_millis()))
            .collect();
        eprintln!("attach time by phase: {}", phases.join(", "));
    }
    if loaded.attached.is_empty() {
        bail!("none of the selected tracers can be attached on this kernel (see `nettrace -t ?`); run with -v for the reasons");
    }
    if config.ret && !plan.tracers.iter().any(|t| t.has_ret()) {
        eprintln!(
            "note: --ret shows return values of kernel-function tracers, and none is attached here"
        );
    }

    let any_drop = plan.attachable().any(|(_, t)| t.role == Role::Drop);
    let any_stack = plan.attachable().any(|(_, t)| t.stack);
    let symbols = Symbols::load(&mut kernel, any_drop || any_stack, any_drop);
    let views = Views {
        timeline: config.timeline,
        count: config.count,
        verbose: host.verbose,
        diag: config.diag,
        idle_flush: Some(session::TIMELINE_IDLE_FLUSH),
    };
    Ok(Prepared {
        loaded,
        plan,
        symbols,
        views,
        scopes,
    })
}

/// The kernel functions among `leaves`.
fn function_names<'a>(leaves: &[&'a Leaf]) -> Vec<&'a str> {
    leaves
        .iter()
        .filter_map(|l| match &l.kind {
            LeafKind::Function { func } => Some(func.as_str()),
            LeafKind::Tracepoint { .. } => None,
        })
        .collect()
}

fn ringbuf_size(kib: u32) -> Result<u32> {
    if kib < 4 || !kib.is_power_of_two() || kib > 1024 * 1024 {
        bail!("--ringbuf-kb must be a power of two between 4 and 1048576, got {kib}");
    }
    Ok(kib * 1024)
}

/// With -v, says what was attached and what not (always says it for
/// tracers the user named that could not attach).
fn report_plan(config: &TraceConfig<'_>, verbose: bool, plan: &Plan, loaded: &loader::Loaded) {
    let prog_ids: std::collections::HashMap<u32, u32> =
        loaded.attached.iter().map(|a| (a.id, a.prog_id)).collect();
    let named: HashSet<&str> = config.tracers.iter().map(String::as_str).collect();
    for (id, t) in plan.tracers.iter().enumerate() {
        let prog = prog_ids.get(&(id as u32)).copied().unwrap_or(0);
        let how = match &t.backend {
            Backend::Tracepoint { tp, typed, .. } => {
                format!("{} {tp}", if *typed { "tp_btf" } else { "raw_tp" })
            }
            Backend::Fentry { func, ret } => {
                format!("fentry {func}{}", if *ret { " + fexit" } else { "" })
            }
            Backend::Kprobe { symbol, multi, ret } => format!(
                "{} {symbol}{}",
                if *multi { "kprobe-multi" } else { "kprobe" },
                if *ret { " + kretprobe" } else { "" }
            ),
            Backend::Unavailable(why) => {
                if verbose || named.contains(t.name.as_str()) {
                    eprintln!("unavailable {}: {why}", t.name);
                }
                continue;
            }
            Backend::Function(_) => continue,
        };
        if verbose {
            eprintln!("attached {}: {how} (prog id {prog})", t.name);
        }
    }
    if verbose {
        eprintln!(
            "attached {} of {} tracers in {} ms",
            loaded.attached.len(),
            plan.tracers.len(),
            loaded.elapsed.as_millis()
        );
        eprintln!(
            "packet reads: {}",
            if loaded.cast {
                "typed loads through bpf_rdonly_cast"
            } else {
                "bpf_probe_read_kernel"
            }
        );
    }
}

/// With `-v --detail`: whether the events can carry conntrack entries. The
/// kernel side reads them through CO-RE against vmlinux's BTF, which lacks
/// `struct nf_conn` where nf_conntrack is a module (module BTF is not used).
fn conntrack_note(btf: &aya::Btf) -> &'static str {
    use aya_obj::btf::BtfKind;
    if btf.id_by_type_name_kind("nf_conn", BtfKind::Struct).is_ok() {
        "conntrack: entries are read from skb->_nfct (struct nf_conn is in the kernel's BTF)"
    } else {
        "conntrack: struct nf_conn is not in the kernel's BTF (nf_conntrack is a module?): --detail shows no conntrack entries"
    }
}

/// `nettrace -t ?`: the tree, each leaf with how it attaches here.
fn print_tracer_list(tree: &TracerTree, choice: BackendChoice) {
    let leaves: Vec<&Leaf> = tree.leaves().collect();
    let kernel = Kernel::probe(&function_names(&leaves));
    let text = tree.render(|leaf| {
        Some(match backend_status(&kernel, leaf, choice) {
            Ok(how) => format!("({how})"),
            Err(why) => format!("(unavailable: {why})"),
        })
    });
    print!("{text}");
}
