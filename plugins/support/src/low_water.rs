//! A socket's receive low-water mark (`SO_RCVLOWAT`), for a reader that naps while its
//! host is busy: with the mark above what arrives in a nap, the peer's writes do not wake the
//! thread polling the socket; setting it back to 1 makes Linux re-check readiness at once, so
//! whatever arrived is read as soon as the nap ends.
//!
//! Why: a broker that writes each message on its own (RabbitMQ's STOMP adapter does) wakes
//! the reader's thread through epoll for every write, nap or no nap, since the socket stays
//! registered; at 30,000 messages a second that was 10,000 wake-ups, most of the reader's CPU
//! time.
//!
//! May depend on: std and libc, for the one socket option neither std nor socket2 sets.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// A handle of its own on a socket, to set its low-water mark.
pub struct LowWater(OwnedFd);

impl LowWater {
    /// `None` if the socket cannot be duplicated: its reader then does without naps.
    pub fn of(socket: &impl AsFd) -> Option<LowWater> {
        socket.as_fd().try_clone_to_owned().ok().map(LowWater)
    }

    pub fn set(&self, bytes: i32) -> std::io::Result<()> {
        let fd = &self.0;
        // SAFETY: `fd` is an open socket this value owns, and the option's value is a C int
        // that lives across the call, as setsockopt(2) requires.
        let result = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        net::{TcpListener, TcpStream},
        time::{Duration, Instant},
    };

    use super::*;

    /// A blocking read waits for the mark (here until its timeout, then it takes what is
    /// there); with the mark back at 1 it returns at once.
    #[test]
    fn the_mark_holds_reads_back_until_it_is_lowered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mark = LowWater::of(&reader).unwrap();
        let mut buf = [0u8; 16];

        mark.set(1024).unwrap();
        writer.write_all(b"few").unwrap();
        let started = Instant::now();
        assert_eq!(std::io::Read::read(&mut &reader, &mut buf).unwrap(), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not held back"
        );

        mark.set(1).unwrap();
        writer.write_all(b"more").unwrap();
        let started = Instant::now();
        assert_eq!(std::io::Read::read(&mut &reader, &mut buf).unwrap(), 4);
        assert!(started.elapsed() < Duration::from_millis(250), "held back");
    }
}
