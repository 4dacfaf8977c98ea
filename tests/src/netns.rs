//! Network namespaces (RAII) and the small topologies the tests run traffic through.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use crate::traffic::{tcp_exchange_via, TcpExchange};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// Name prefix of every namespace the harness creates.
pub const PREFIX: &str = "ntt-";

/// The port at the VIP that [`Topology::add_port_dnat`]'s rule matches.
pub const VIP_PORT: u16 = 80;
/// The port on B that rule rewrites [`VIP_PORT`] to.
pub const B_PORT: u16 = 8080;

/// Runs a command, panicking with its output if it cannot start or fails.
pub fn run_ok(program: &str, args: &[&str]) -> Output {
    let out = run(program, args);
    if !out.status.success() {
        panic!(
            "command failed ({}): {} {}\nstdout: {}\nstderr: {}",
            out.status,
            program,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out
}

/// Runs a command and returns its output, panicking only if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {}: {e}", args.join(" ")))
}

/// Deletes `ntt-<pid>-<n>` namespaces left by test processes that no longer exist
/// (for example after a SIGKILL). Namespaces of live processes are never touched.
fn reap_stale() {
    let out = run("ip", &["netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A network namespace created with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name (`ntt-<pid>-<n>`, at most 15 characters),
    /// brings `lo` up and disables IPv6 (less unrelated noise in traces).
    pub fn new() -> Netns {
        REAP.call_once(reap_stale);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        assert!(name.len() <= 15, "namespace name too long: {name}");
        run_ok("ip", &["netns", "add", &name]);
        // From here on, Drop cleans up even if the rest panics.
        let ns = Netns { name };
        ns.exec_ok(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
             echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; true",
        ]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Turns IPv6 back on in this namespace (`new` disables it): `all`, `default` and every
    /// device that already exists (writing `all` propagates to existing devices).
    pub fn enable_ipv6(&self) {
        self.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
        self.sysctl("net.ipv6.conf.default.disable_ipv6", "0");
    }

    /// The namespace name (as used by `ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// The inode number of the namespace (what `nettrace --netns INODE` takes).
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// `ip netns exec NAME args...`; returns the output whatever the status.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Like [`Netns::exec`] but panics (with the output) on a non-zero status.
    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// `ip -n NAME args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// The ifindex of interface `dev` inside this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(':')
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse ifindex of {dev} in {}: {text}", self.name))
    }

    /// The `--detail` interface column for `dev` in this namespace: `ifindex:name`.
    pub fn iface_label(&self, dev: &str) -> String {
        format!("{}:{dev}", self.ifindex(dev))
    }

    /// `iptables args...` inside the namespace, panicking on failure.
    pub fn iptables(&self, args: &[&str]) {
        let mut full = vec!["iptables", "-w"];
        full.extend_from_slice(args);
        self.exec_ok(&full);
    }

    /// Writes `value` to a sysctl under `/proc/sys` inside the namespace
    /// (`key` with dots, e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec_ok(&["sh", "-c", &format!("echo {value} > {path}")]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

/// Which topology a [`Topology`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A and B on one L2 segment through bridge `br0` in the middle namespace.
    Bridged,
    /// A and B on two subnets with the middle namespace routing between them.
    Routed,
}

/// Two end namespaces `a` and `b` joined through a middle namespace `mid`.
///
/// Interface names (each inside its own namespace):
/// - `a` has `a0`, `b` has `b0`;
/// - `mid` has `pa` (peer of `a0`) and `pb` (peer of `b0`), plus `br0` when bridged.
///
/// Bridged (`Topology::bridged(id)`): `a0` = 10.250.id.1/24, `b0` = 10.250.id.2/24,
/// `pa` and `pb` are ports of `br0` and have no address.
///
/// Bridged with IPv6 (`Topology::bridged_v6(id)`): as bridged, plus IPv6 on in A and B and
/// `a0` = fd00:250:id::1/64, `b0` = fd00:250:id::2/64 (every other topology has IPv6 off).
///
/// Routed (`Topology::routed(id)`): `a0` = 10.250.id.2/24, `pa` = 10.250.id.1/24,
/// `pb` = 10.250.(id+1).1/24, `b0` = 10.250.(id+1).2/24, forwarding on in `mid`,
/// default routes of `a` and `b` via `mid`. Uses subnets `id` and `id + 1`.
///
/// Everything is removed on drop (deleting the namespaces deletes the veths).
#[derive(Debug)]
pub struct Topology {
    pub kind: Kind,
    pub a: Netns,
    pub b: Netns,
    /// The bridge namespace (bridged) or the router (routed).
    pub mid: Netns,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
    /// Router addresses on the A side and the B side (routed only).
    pub mid_a_addr: Option<Ipv4Addr>,
    pub mid_b_addr: Option<Ipv4Addr>,
    /// IPv6 addresses of A and B (`Topology::bridged_v6` only).
    pub a_addr6: Option<Ipv6Addr>,
    pub b_addr6: Option<Ipv6Addr>,
    pub a_if: &'static str,
    pub b_if: &'static str,
    pub mid_a_if: &'static str,
    pub mid_b_if: &'static str,
    pub bridge_if: &'static str,
}

fn addr(subnet: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, subnet, host)
}

/// `fd00:250:<id>::<host>`: `id` is written in decimal digits, as in the IPv4 subnet
/// (`fd00:250:120::1` for subnet 120).
fn addr6(id: u8, host: u16) -> Ipv6Addr {
    let group = u16::from_str_radix(&id.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd00, 0x250, group, 0, 0, 0, 0, host)
}

impl Topology {
    fn base(kind: Kind, a_addr: Ipv4Addr, b_addr: Ipv4Addr) -> Topology {
        let topo = Topology {
            kind,
            a: Netns::new(),
            b: Netns::new(),
            mid: Netns::new(),
            a_addr,
            b_addr,
            mid_a_addr: None,
            mid_b_addr: None,
            a_addr6: None,
            b_addr6: None,
            a_if: "a0",
            b_if: "b0",
            mid_a_if: "pa",
            mid_b_if: "pb",
            bridge_if: "br0",
        };
        // Create the pairs from inside `mid` with the peers placed directly in `a`/`b`,
        // so nothing is ever created in the root namespace (no name clashes there).
        topo.mid.ip(&[
            "link",
            "add",
            topo.mid_a_if,
            "type",
            "veth",
            "peer",
            "name",
            topo.a_if,
            "netns",
            topo.a.name(),
        ]);
        topo.mid.ip(&[
            "link",
            "add",
            topo.mid_b_if,
            "type",
            "veth",
            "peer",
            "name",
            topo.b_if,
            "netns",
            topo.b.name(),
        ]);
        topo
    }

    /// A and B on 10.250.`id`.0/24 joined by bridge `br0` in `mid`.
    pub fn bridged(id: u8) -> Topology {
        let topo = Topology::base(Kind::Bridged, addr(id, 1), addr(id, 2));
        let m = &topo.mid;
        m.ip(&["link", "add", topo.bridge_if, "type", "bridge"]);
        m.ip(&["link", "set", topo.mid_a_if, "master", topo.bridge_if]);
        m.ip(&["link", "set", topo.mid_b_if, "master", topo.bridge_if]);
        for dev in [topo.bridge_if, topo.mid_a_if, topo.mid_b_if] {
            m.ip(&["link", "set", dev, "up"]);
        }
        let a_cidr = format!("{}/24", topo.a_addr);
        let b_cidr = format!("{}/24", topo.b_addr);
        topo.a.ip(&["addr", "add", &a_cidr, "dev", topo.a_if]);
        topo.a.ip(&["link", "set", topo.a_if, "up"]);
        topo.b.ip(&["addr", "add", &b_cidr, "dev", topo.b_if]);
        topo.b.ip(&["link", "set", topo.b_if, "up"]);
        topo
    }

    /// Like [`Topology::bridged`] (same IPv4 addresses) with IPv6 enabled in A and B:
    /// `a0` = fd00:250:`id`::1/64, `b0` = fd00:250:`id`::2/64, both `nodad` (usable at once).
    /// IPv6 stays disabled in `mid`: the bridge only switches the frames.
    pub fn bridged_v6(id: u8) -> Topology {
        let mut topo = Topology::bridged(id);
        let a6 = addr6(id, 1);
        let b6 = addr6(id, 2);
        for (ns, dev, a) in [(&topo.a, topo.a_if, a6), (&topo.b, topo.b_if, b6)] {
            ns.enable_ipv6();
            ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0");
            ns.ip(&["addr", "add", &format!("{a}/64"), "dev", dev, "nodad"]);
        }
        topo.a_addr6 = Some(a6);
        topo.b_addr6 = Some(b6);
        topo
    }

    /// A's IPv6 address; panics unless the topology has one (`bridged_v6`).
    pub fn a6(&self) -> Ipv6Addr {
        self.a_addr6
            .expect("topology without IPv6 (use Topology::bridged_v6)")
    }

    /// B's IPv6 address; panics unless the topology has one (`bridged_v6`).
    pub fn b6(&self) -> Ipv6Addr {
        self.b_addr6
            .expect("topology without IPv6 (use Topology::bridged_v6)")
    }

    /// A (10.250.`id`.2) — router (10.250.`id`.1 / 10.250.`id+1`.1) — B (10.250.`id+1`.2).
    pub fn routed(id: u8) -> Topology {
        assert!(id < 255, "routed topology needs subnets id and id+1");
        let mut topo = Topology::base(Kind::Routed, addr(id, 2), addr(id + 1, 2));
        topo.mid_a_addr = Some(addr(id, 1));
        topo.mid_b_addr = Some(addr(id + 1, 1));
        let m = &topo.mid;
        m.sysctl("net.ipv4.ip_forward", "1");
        m.ip(&[
            "addr",
            "add",
            &format!("{}/24", addr(id, 1)),
            "dev",
            topo.mid_a_if,
        ]);
        m.ip(&[
            "addr",
            "add",
            &format!("{}/24", addr(id + 1, 1)),
            "dev",
            topo.mid_b_if,
        ]);
        m.ip(&["link", "set", topo.mid_a_if, "up"]);
        m.ip(&["link", "set", topo.mid_b_if, "up"]);
        let a_cidr = format!("{}/24", topo.a_addr);
        let b_cidr = format!("{}/24", topo.b_addr);
        topo.a.ip(&["addr", "add", &a_cidr, "dev", topo.a_if]);
        topo.a.ip(&["link", "set", topo.a_if, "up"]);
        topo.a
            .ip(&["route", "add", "default", "via", &addr(id, 1).to_string()]);
        topo.b.ip(&["addr", "add", &b_cidr, "dev", topo.b_if]);
        topo.b.ip(&["link", "set", topo.b_if, "up"]);
        topo.b.ip(&[
            "route",
            "add",
            "default",
            "via",
            &addr(id + 1, 1).to_string(),
        ]);
        topo
    }

    /// Routed only: DNAT `vip` to `target` in the router (`-t nat -A PREROUTING -d VIP -j DNAT`).
    /// Conntrack un-NATs the replies. `vip` must be routed towards the router by A
    /// (any address off A's subnet is, through A's default route).
    pub fn add_dnat(&self, vip: Ipv4Addr, target: Ipv4Addr) {
        self.dnat(vip, &[], &target.to_string());
    }

    /// Routed only: R turns TCP to `vip`:[`VIP_PORT`] into B:[`B_PORT`], a DNAT that
    /// rewrites the port too (see [`Topology::vip_exchange`]).
    pub fn add_port_dnat(&self, vip: Ipv4Addr) {
        let vport = VIP_PORT.to_string();
        let to = format!("{}:{B_PORT}", self.b_addr);
        self.dnat(vip, &["-p", "tcp", "--dport", &vport], &to);
    }

    /// One TCP exchange from A's `client_port` to `vip`:[`VIP_PORT`], which the rule of
    /// [`Topology::add_port_dnat`] turns into B:[`B_PORT`].
    pub fn vip_exchange(&self, vip: Ipv4Addr, client_port: u16) -> TcpExchange {
        tcp_exchange_via(
            &self.a,
            &self.b,
            SocketAddrV4::new(self.b_addr, B_PORT),
            SocketAddrV4::new(vip, VIP_PORT),
            client_port,
        )
    }

    /// `-t nat -A PREROUTING -d VIP [matches] -j DNAT --to-destination TO` in the router.
    fn dnat(&self, vip: Ipv4Addr, matches: &[&str], to: &str) {
        assert_eq!(self.kind, Kind::Routed, "DNAT needs a routed topology");
        let vip = vip.to_string();
        let mut args = vec!["-t", "nat", "-A", "PREROUTING", "-d", &vip];
        args.extend_from_slice(matches);
        args.extend(["-j", "DNAT", "--to-destination", to]);
        self.mid.iptables(&args);
    }

    /// `ifindex:name` of A's interface, as `--detail` prints it.
    pub fn a_label(&self) -> String {
        self.a.iface_label(self.a_if)
    }

    /// `ifindex:name` of B's interface.
    pub fn b_label(&self) -> String {
        self.b.iface_label(self.b_if)
    }

    /// `ifindex:name` of the middle namespace's A-side interface (bridge port / router leg).
    pub fn mid_a_label(&self) -> String {
        self.mid.iface_label(self.mid_a_if)
    }

    /// `ifindex:name` of the middle namespace's B-side interface.
    pub fn mid_b_label(&self) -> String {
        self.mid.iface_label(self.mid_b_if)
    }
}
