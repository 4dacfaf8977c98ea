//! Two rtnetlink questions, asked in the current thread's network namespace:
//! an interface's name, link and the namespace id of its link
//! (`RTM_GETLINK`), and the id this namespace gives another one
//! (`RTM_GETNSID`). Just enough to tell which veth leads to a container.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NLM_F_REQUEST: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RTGENMSG_LEN: usize = 4;

/// What `RTM_GETLINK` says about an interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// `IFLA_IFNAME`.
    pub name: String,
    /// `IFLA_LINK`: the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the id of the peer's namespace, when it is another one.
    pub link_netnsid: Option<i32>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// `(type, payload)` of each attribute in `buf`.
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

/// Parses the body (after the netlink header) of an `RTM_NEWLINK` message.
pub fn parse_link(body: &[u8]) -> LinkInfo {
    let mut info = LinkInfo::default();
    for (ty, p) in attrs(body.get(IFINFOMSG_LEN..).unwrap_or(&[])) {
        match ty {
            IFLA_IFNAME => {
                let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
                info.name = String::from_utf8_lossy(&p[..end]).into_owned();
            }
            IFLA_LINK => info.link = u32_of(p),
            IFLA_LINK_NETNSID => info.link_netnsid = u32_of(p).map(|v| v as i32),
            _ => {}
        }
    }
    info
}

fn socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open a netlink socket");
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request and returns the body of the reply of type `want`.
fn request(ty: u16, body: &[u8], want: u16) -> Result<Vec<u8>> {
    let sock = socket()?;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(body);
    // SAFETY: msg is a valid buffer of msg.len() bytes.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("netlink send");
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: buf is a valid writable buffer of buf.len() bytes.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("netlink recv");
    }
    buf.truncate(n as usize);
    let Some(hdr) = buf.get(..NLMSG_HDRLEN) else {
        bail!("short netlink reply");
    };
    let len = u32_of(hdr).unwrap_or(0) as usize;
    let got = u16::from_ne_bytes([hdr[4], hdr[5]]);
    let body = buf
        .get(NLMSG_HDRLEN..len.min(buf.len()))
        .unwrap_or(&[])
        .to_vec();
    if got == NLMSG_ERROR {
        let errno = u32_of(&body).map(|v| -(v as i32)).unwrap_or(0);
        return Err(std::io::Error::from_raw_os_error(errno)).context("netlink request refused");
    }
    if got != want {
        bail!("unexpected netlink reply type {got}");
    }
    Ok(body)
}

/// `RTM_GETLINK` for the interface `ifindex` of the current namespace.
pub fn get_link(ifindex: u32) -> Result<LinkInfo> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let reply = request(RTM_GETLINK, &body, RTM_NEWLINK)
        .with_context(|| format!("no interface with index {ifindex}"))?;
    Ok(parse_link(&reply))
}

/// The id the current namespace gives the namespace open as `ns_fd`
/// (negative when it has none).
pub fn netns_id(ns_fd: RawFd) -> Result<i32> {
    let mut body = vec![0u8; RTGENMSG_LEN];
    push_attr(&mut body, NETNSA_FD, &(ns_fd as u32).to_ne_bytes());
    let reply = request(RTM_GETNSID, &body, RTM_NEWNSID)?;
    attrs(reply.get(RTGENMSG_LEN..).unwrap_or(&[]))
        .into_iter()
        .find(|(ty, _)| *ty == NETNSA_NSID)
        .and_then(|(_, p)| u32_of(p))
        .map(|v| v as i32)
        .context("no NETNSA_NSID in the reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_attributes_parse() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        push_attr(&mut body, IFLA_IFNAME, b"veth9\0");
        push_attr(&mut body, 99, &[1, 2, 3]);
        push_attr(&mut body, IFLA_LINK, &2u32.to_ne_bytes());
        push_attr(&mut body, IFLA_LINK_NETNSID, &5u32.to_ne_bytes());
        assert_eq!(
            parse_link(&body),
            LinkInfo {
                name: "veth9".into(),
                link: Some(2),
                link_netnsid: Some(5)
            }
        );
        // truncated or garbage input yields what could be read
        assert_eq!(parse_link(&body[..IFINFOMSG_LEN + 3]), LinkInfo::default());
        assert_eq!(parse_link(&[]), LinkInfo::default());
        let mut bad = vec![0u8; IFINFOMSG_LEN];
        bad.extend_from_slice(&[200, 0, 3, 0]);
        assert_eq!(parse_link(&bad), LinkInfo::default());
    }

    #[test]
    fn loopback_is_found_over_netlink() {
        let lo = get_link(1).expect("RTM_GETLINK for ifindex 1");
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.link_netnsid, None);
        assert!(get_link(u32::MAX).is_err());
    }
}
