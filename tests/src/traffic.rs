//! Traffic between namespaces: ping through `ip netns exec`, UDP and TCP from Rust threads
//! that first join the namespace with `setns(CLONE_NEWNET)` (a socket belongs to the network
//! namespace of the thread that creates it).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use crate::netns::Netns;

/// How long any socket operation may block.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

fn ping_output(ns: &Netns, dst: IpAddr, count: u32) -> Output {
    let count = count.to_string();
    let dst = dst.to_string();
    let mut args = vec!["ping", "-n"];
    if dst.contains(':') {
        args.push("-6");
    }
    args.extend_from_slice(&["-c", &count, "-i", "0.2", "-W", "1", &dst]);
    ns.exec(&args)
}

/// `ip netns exec NS ping -c COUNT -i 0.2 -W 1 DST` (with `-6` for an IPv6 `dst`);
/// panics unless every reply came back.
pub fn ping(ns: &Netns, dst: impl Into<IpAddr>, count: u32) -> Output {
    let dst = dst.into();
    let out = ping_output(ns, dst, count);
    if !out.status.success() {
        panic!(
            "ping {dst} from {} failed ({}):\n{}{}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Like [`ping`] but expects every packet to be lost (panics if a reply came back).
pub fn ping_expect_loss(ns: &Netns, dst: impl Into<IpAddr>, count: u32) -> Output {
    let dst = dst.into();
    let out = ping_output(ns, dst, count);
    if out.status.success() {
        panic!(
            "ping {dst} from {} was expected to lose its packets but succeeded:\n{}",
            ns.name(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

/// Runs `f` on a fresh thread that has joined `ns`'s network namespace.
pub fn in_netns<T, F>(ns: &Netns, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = ns.path();
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Sends one UDP datagram from `from_ns` (source port `src_port`, any address of `to`'s
/// family) to `to`.
pub fn udp_send(from_ns: &Netns, to: SocketAddr, payload: &[u8], src_port: u16) {
    let any: IpAddr = match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let local = SocketAddr::from((any, src_port));
    in_netns(from_ns, || {
        let sock = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind udp {local}: {e}"));
        sock.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        let n = sock
            .send_to(payload, to)
            .unwrap_or_else(|e| panic!("udp send to {to}: {e}"));
        assert_eq!(n, payload.len(), "short udp send");
    });
}

/// What a [`tcp_exchange`] did.
#[derive(Debug, Clone)]
pub struct TcpExchange {
    /// The client's address and port as the server saw them.
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    pub request: Vec<u8>,
    pub reply: Vec<u8>,
}

/// Request line the client sends.
pub const TCP_REQUEST: &[u8] = b"hello nettrace\n";
/// Reply line the server sends back.
pub const TCP_REPLY: &[u8] = b"hello client\n";

fn set_timeout(fd: i32, opt: libc::c_int, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: fd is a valid socket, tv lives for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A blocking TCP connection from a chosen source port, with bounded connect/IO timeouts.
fn connect_from(src_port: u16, dst: SocketAddrV4) -> TcpStream {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: raw is a fresh, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option buffer.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
    // Linux bounds connect() by SO_SNDTIMEO.
    set_timeout(fd.as_raw_fd(), libc::SO_SNDTIMEO, SOCKET_TIMEOUT);
    set_timeout(fd.as_raw_fd(), libc::SO_RCVTIMEO, SOCKET_TIMEOUT);
    let local = sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, src_port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid fd, sockaddr_in of the right length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &local as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        )
    };
    assert_eq!(
        rc,
        0,
        "bind tcp 0.0.0.0:{src_port}: {}",
        std::io::Error::last_os_error()
    );
    let remote = sockaddr_in(dst);
    // SAFETY: as above.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &remote as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        )
    };
    assert_eq!(
        rc,
        0,
        "connect {dst} from port {src_port}: {}",
        std::io::Error::last_os_error()
    );
    TcpStream::from(fd)
}

fn accept_with_deadline(listener: &TcpListener, deadline: Instant) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                return (s, peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    panic!("tcp server: no connection within {SOCKET_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("tcp accept: {e}"),
        }
    }
}

/// Starts a listener on `server` inside `server_ns`, connects to it from `client_ns` with source
/// port `client_port`, sends [`TCP_REQUEST`], reads [`TCP_REPLY`] and closes (client first).
/// Every step is bounded by [`SOCKET_TIMEOUT`].
pub fn tcp_exchange(
    client_ns: &Netns,
    server_ns: &Netns,
    server: SocketAddrV4,
    client_port: u16,
) -> TcpExchange {
    tcp_exchange_via(client_ns, server_ns, server, server, client_port)
}

/// [`tcp_exchange`] with the client connecting to `connect` (a virtual address that NAT
/// turns into `server`).
pub fn tcp_exchange_via(
    client_ns: &Netns,
    server_ns: &Netns,
    server: SocketAddrV4,
    connect: SocketAddrV4,
    client_port: u16,
) -> TcpExchange {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let server_thread = s.spawn(|| {
            in_netns(server_ns, move || {
                let listener = TcpListener::bind(server)
                    .unwrap_or_else(|e| panic!("tcp listen on {server}: {e}"));
                ready_tx.send(()).unwrap();
                let deadline = Instant::now() + SOCKET_TIMEOUT;
                let (stream, peer) = accept_with_deadline(&listener, deadline);
                stream.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = Vec::new();
                reader
                    .read_until(b'\n', &mut request)
                    .unwrap_or_else(|e| panic!("tcp server read: {e}"));
                (&stream)
                    .write_all(TCP_REPLY)
                    .unwrap_or_else(|e| panic!("tcp server write: {e}"));
                // Wait for the client's FIN so the close handshake is complete.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                (request, peer)
            })
        });
        ready_rx
            .recv_timeout(SOCKET_TIMEOUT)
            .expect("tcp server did not start listening");
        let reply = in_netns(client_ns, || {
            let mut stream = connect_from(client_port, connect);
            stream
                .write_all(TCP_REQUEST)
                .unwrap_or_else(|e| panic!("tcp client write: {e}"));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut reply = Vec::new();
            reader
                .read_until(b'\n', &mut reply)
                .unwrap_or_else(|e| panic!("tcp client read: {e}"));
            let _ = stream.shutdown(std::net::Shutdown::Both);
            reply
        });
        let (request, peer) = server_thread
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_eq!(request, TCP_REQUEST, "server got an unexpected request");
        assert_eq!(reply, TCP_REPLY, "client got an unexpected reply");
        TcpExchange {
            client: match peer {
                SocketAddr::V4(v4) => v4,
                SocketAddr::V6(v6) => panic!("unexpected IPv6 peer {v6}"),
            },
            server,
            request,
            reply,
        }
    })
}
