//! Sending file descriptors over a Unix socket (`SCM_RIGHTS`).

use std::io;
use std::os::fd::RawFd;

/// Sends `data` as one datagram on `socket` with `fds` attached, without blocking (`WouldBlock`
/// when the socket is full) and without `SIGPIPE` (`EPIPE` when the peer is gone).
pub(super) fn send_with_fds(socket: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    let fd_len = u32::try_from(fd_bytes).map_err(|_| io::Error::other("too many descriptors"))?;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 words keep the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields set below point into live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` has a control buffer of CMSG_SPACE(fd_len) bytes, so the first header and
    // its data (fd_len bytes) fit; the kernel only reads `data` through `iov`.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    };
    match sent {
        -1 => Err(io::Error::last_os_error()),
        n if n as usize == data.len() => Ok(()),
        _ => Err(io::Error::other("datagram truncated")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixDatagram;

    use super::send_with_fds;

    #[test]
    fn a_passed_pipe_end_reaches_the_peer_and_works() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let (mut read, write) = std::io::pipe().unwrap();
        send_with_fds(a.as_raw_fd(), b"hello", &[write.as_raw_fd()]).unwrap();
        drop(write);

        let mut data = [0u8; 16];
        let mut control = vec![0u64; 8];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: test-only recvmsg into live buffers.
        let (n, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = 64;
            let n = libc::recvmsg(b.as_raw_fd(), &mut msg, 0);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null(), "no descriptor arrived");
            assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
            (n, OwnedFd::from_raw_fd(fd))
        };
        assert_eq!(&data[..n as usize], b"hello");
        let mut received = std::fs::File::from(fd);
        received.write_all(b"through the passed end").unwrap();
        drop(received);
        let mut text = String::new();
        read.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the passed end");
    }
}
