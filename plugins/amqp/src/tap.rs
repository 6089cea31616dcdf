//! The hot path of consuming: each delivery is lifted out of the bytes from the broker
//! before lapin reads them, and handed to the host's threads through an [`Inbox`].
//!
//! Once a consumer's connection consumes, it carries almost nothing but deliveries: per
//! message a `basic.deliver` method frame, a content header frame and the body's frames.
//! lapin would parse each frame into its own types on its I/O thread, route it through the
//! channel's state machine into the consumer's queue, and hand the message over behind a
//! lock and a waker: that was the largest share of the plugin's CPU time per message.
//! [`Screened`](crate::screen::Screened) reads every byte from the broker anyway, so on a
//! consumer's connection it gives the frames of deliveries to a [`Tap`], which builds the
//! host's [`Delivery`] from them and puts it in the session's [`Inbox`]; the host's threads
//! take it from there (`src/consumer.rs`). Every other frame (the connection's and the
//! channel's methods, `basic.cancel`, heartbeats) still goes to lapin, which keeps owning the
//! connection: its handshake, heartbeats, acknowledgements, errors and closing.
//!
//! Content header frames are screened (`src/screen.rs`) before they are parsed here, so the
//! limits on what a publisher can make the consumer parse are the same as lapin's.
//!
//! lapin declares a connection dead when it has read nothing for twice the heartbeat, and a
//! broker busy delivering sends no heartbeats, so lapin is handed a heartbeat frame in place
//! of the deliveries at least every [`FEED`].
//!
//! While the host is busy with deliveries it has not taken, the stream naps a millisecond
//! before reading on, with the socket's receive low-water mark raised
//! (`golconde_plugin_support::low_water`), so that the broker's frames gather and one read
//! takes many: each read otherwise woke two threads (the runtime's reactor, then lapin's I/O
//! loop) for a few deliveries.
//!
//! May depend on: the plugin API's message types, `src/properties.rs` for the headers,
//! lapin's property parser, the support crate's low-water mark, tokio's timer.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{ready, Context, Poll, Waker},
    time::{Duration, Instant},
};

use golconde_plugin_api::{Delivery, Message, RVec};
use golconde_plugin_support::low_water::LowWater;
use tokio::{runtime::Handle, time::Sleep};

use crate::{properties, screen};

/// The longest lapin goes without reading a frame while deliveries flow past it.
pub const FEED: Duration = Duration::from_secs(1);

/// How long a busy host's deliveries gather in the socket between reads.
const NAP: Duration = Duration::from_millis(1);

/// The socket's low-water mark during a nap: more than a nap's deliveries.
const NAP_LOW_WATER: i32 = 64 * 1024;

/// A heartbeat frame: type 8 on channel 0, no payload.
const HEARTBEAT: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];

/// Class and method of `basic.deliver`.
const DELIVER: [u8; 4] = [0, 60, 0, 60];

/// The most of a body reserved up front; a larger one grows as its frames arrive, so a
/// body size the broker announces costs memory only as the body comes.
const RESERVE: usize = 1 << 20;

/// Deliveries read off one session's connection that the host has not taken yet, in the
/// order the broker sent them. The broker's prefetch bounds how many.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Tagged with the broker's delivery tag.
    deliveries: VecDeque<Delivery>,
    /// Woken once when deliveries arrive after a [`Inbox::take`] found none.
    waker: Option<Waker>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change leaves the state whole, so a panicking holder left nothing half-done.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inbox {
    /// Moves up to `max` deliveries, oldest first, to `into`. Finding none, it keeps `waker`
    /// to wake when the next ones arrive; the check and the keeping are one step, so none
    /// can arrive unseen in between.
    pub fn take(&self, max: usize, waker: &Waker, into: &mut Vec<Delivery>) {
        let mut state = lock(&self.state);
        if state.deliveries.is_empty() {
            match &state.waker {
                Some(kept) if kept.will_wake(waker) => {}
                _ => state.waker = Some(waker.clone()),
            }
            return;
        }
        let count = max.min(state.deliveries.len());
        into.extend(state.deliveries.drain(..count));
    }

    /// Adds `batch` (emptying it) and wakes whoever waits for it; says whether the host had
    /// not yet taken what came before (it is busy).
    fn put(&self, batch: &mut Vec<Delivery>) -> bool {
        let mut state = lock(&self.state);
        let busy = !state.deliveries.is_empty();
        state.deliveries.extend(batch.drain(..));
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        busy
    }
}

/// What a connection's [`Screened`](crate::screen::Screened) stream does with the frames of
/// deliveries.
pub struct Tap {
    inbox: Arc<Inbox>,
    /// The delivery whose frames are being read.
    building: Option<Building>,
    /// Deliveries completed by this read from the socket, put in the inbox together.
    done: Vec<Delivery>,
    /// When lapin was last given anything to read.
    fed: Instant,
    /// What napping takes; without it (no handle on the socket) the tap never naps.
    napping: Option<Napping>,
    /// The host has not taken the deliveries before the last ones: nap before reading on.
    busy: bool,
    /// The nap in progress.
    nap: Option<Pin<Box<Sleep>>>,
}

/// The socket's low-water mark, raised while napping, and the runtime of the nap's timer.
pub struct Napping {
    pub low_water: LowWater,
    pub runtime: Handle,
}

struct Building {
    tag: u64,
    redelivered: bool,
    /// Set once the content header frame was read.
    content: Option<Content>,
}

struct Content {
    headers: RVec<golconde_plugin_api::Header>,
    size: u64,
    body: Vec<u8>,
}

impl Tap {
    pub fn new(inbox: Arc<Inbox>, napping: Option<Napping>) -> Tap {
        Tap {
            inbox,
            building: None,
            done: Vec::new(),
            fed: Instant::now(),
            napping,
            busy: false,
            nap: None,
        }
    }

    /// Before the next read from the socket: while the host is busy with what it has, lets
    /// the broker's frames gather in the socket for [`NAP`] with its low-water mark raised,
    /// so that they are read in one go instead of waking two threads (the runtime's reactor
    /// and lapin's I/O loop) for every few. A host waiting for deliveries gets them without
    /// delay.
    pub fn poll_nap(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(napping) = &self.napping else {
            return Poll::Ready(Ok(()));
        };
        if self.nap.is_none() {
            if !std::mem::take(&mut self.busy) || napping.low_water.set(NAP_LOW_WATER).is_err() {
                return Poll::Ready(Ok(()));
            }
            let _entered = napping.runtime.enter();
            self.nap = Some(Box::pin(tokio::time::sleep(NAP)));
        }
        ready!(self.nap.as_mut().expect("set above").as_mut().poll(cx));
        self.nap = None;
        // Setting it back makes Linux signal the socket readable at once if anything came;
        // a socket left quiet would hold the next frames back for good, so failing that ends
        // the connection instead.
        Poll::Ready(napping.low_water.set(1))
    }

    /// Whether the frame at the start of `input`, of type `kind`, belongs to a delivery and
    /// so to the tap; `None` until enough of it is there to tell.
    pub fn claims(&self, kind: u8, input: &[u8]) -> Option<bool> {
        Some(match kind {
            screen::FRAME_METHOD => {
                input.get(screen::FRAME_HEAD..screen::FRAME_HEAD + DELIVER.len())? == DELIVER
            }
            screen::FRAME_HEADER => self.building.as_ref().is_some_and(|b| b.content.is_none()),
            screen::FRAME_BODY => self.building.as_ref().is_some_and(|b| b.content.is_some()),
            _ => false,
        })
    }

    /// Reads a frame it claimed, whole (type byte to end byte). A delivery the broker sent
    /// frames for that cannot be read is the connection's end, as it would be in lapin.
    pub fn read(&mut self, frame: &[u8], frame_max: usize) -> io::Result<()> {
        if frame.last() != Some(&screen::FRAME_END) {
            return Err(broken("a frame without its end byte".into()));
        }
        let payload = &frame[screen::FRAME_HEAD..frame.len() - 1];
        match frame[0] {
            screen::FRAME_METHOD => {
                let (tag, redelivered) = deliver(payload).ok_or_else(|| {
                    broken("a basic.deliver method frame that is cut short".into())
                })?;
                if self.building.is_some() {
                    tracing::debug!("a delivery's content was cut short by the next delivery");
                }
                self.building = Some(Building {
                    tag,
                    redelivered,
                    content: None,
                });
            }
            screen::FRAME_HEADER => {
                let screened = screen::screen_header(frame, frame_max);
                let payload = &screened[screen::FRAME_HEAD..screened.len() - 1];
                let (size, headers) = content_header(payload)?;
                let building = self.building.as_mut().expect("claimed only while building");
                let reserve = usize::try_from(size).unwrap_or(usize::MAX).min(RESERVE);
                building.content = Some(Content {
                    headers,
                    size,
                    body: Vec::with_capacity(reserve),
                });
            }
            _ => {
                let content = self
                    .building
                    .as_mut()
                    .and_then(|b| b.content.as_mut())
                    .expect("claimed only with content");
                content.body.extend_from_slice(payload);
            }
        }
        let complete = self
            .building
            .as_ref()
            .and_then(|b| b.content.as_ref())
            .is_some_and(|c| c.body.len() as u64 >= c.size);
        if complete {
            let building = self.building.take().expect("checked above");
            let content = building.content.expect("checked above");
            properties::warn_screened(&content.headers, building.tag);
            self.done.push(Delivery {
                tag: building.tag,
                redelivered: building.redelivered,
                message: Message {
                    headers: content.headers,
                    body: RVec::from(content.body),
                },
            });
        }
        Ok(())
    }

    /// Ends a read from the socket: what it completed goes to the inbox, and `output` (what
    /// lapin reads next) gets a heartbeat if lapin was given nothing for [`FEED`].
    pub fn flush(&mut self, output: &mut Vec<u8>) {
        if !self.done.is_empty() {
            self.busy = self.inbox.put(&mut self.done);
        }
        if output.is_empty() {
            if self.fed.elapsed() < FEED {
                return;
            }
            output.extend_from_slice(&HEARTBEAT);
        }
        self.fed = Instant::now();
    }
}

/// The delivery tag and the redelivered flag of a `basic.deliver` payload.
fn deliver(payload: &[u8]) -> Option<(u64, bool)> {
    let mut r = screen::Reader::new(payload);
    r.take(DELIVER.len())?;
    r.short()?; // consumer tag
    let tag = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let bits = r.u8()?;
    Some((tag, bits & 1 == 1))
}

/// The body size and the headers of a (screened) content header payload.
fn content_header(payload: &[u8]) -> io::Result<(u64, RVec<golconde_plugin_api::Header>)> {
    let cut = || broken("a content header frame that is cut short".into());
    let size = payload.get(4..12).ok_or_else(cut)?;
    let size = u64::from_be_bytes(size.try_into().expect("8 bytes"));
    let (_, read) = lapin::protocol::basic::parse_properties(&payload[12..]).map_err(|e| {
        broken(format!(
            "a content header frame whose properties cannot be read ({e})"
        ))
    })?;
    Ok((size, properties::headers(&read)))
}

fn broken(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the broker sent {what}; the connection is closed and opened again"),
    )
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 0, 1];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(0xCE);
        out
    }

    fn deliver_frame(tag: u64, redelivered: bool) -> Vec<u8> {
        let mut payload = DELIVER.to_vec();
        payload.push(8);
        payload.extend_from_slice(b"golconde");
        payload.extend_from_slice(&tag.to_be_bytes());
        payload.push(u8::from(redelivered));
        payload.extend_from_slice(&[1, b'x', 1, b'q']);
        frame(screen::FRAME_METHOD, &payload)
    }

    /// A content header with a message id, for a body of `size` bytes.
    fn header_frame(size: u64, id: &str) -> Vec<u8> {
        let mut payload = vec![0, 60, 0, 0];
        payload.extend_from_slice(&size.to_be_bytes());
        payload.extend_from_slice(&(1u16 << 7).to_be_bytes());
        payload.push(id.len() as u8);
        payload.extend_from_slice(id.as_bytes());
        frame(screen::FRAME_HEADER, &payload)
    }

    fn tap(inbox: Arc<Inbox>) -> Tap {
        Tap::new(inbox, None)
    }

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Feeds whole frames as `Screened` does: each claimed one to the tap.
    fn feed(tap: &mut Tap, frames: &[Vec<u8>]) {
        for f in frames {
            assert_eq!(tap.claims(f[0], f), Some(true), "frame of type {}", f[0]);
            tap.read(f, 131_072).unwrap();
        }
    }

    #[test]
    fn a_delivery_in_several_body_frames_arrives_whole() {
        let inbox = Arc::new(Inbox::default());
        let mut tap = tap(inbox.clone());
        feed(
            &mut tap,
            &[
                deliver_frame(7, true),
                header_frame(5, "m-1"),
                frame(screen::FRAME_BODY, b"he"),
                frame(screen::FRAME_BODY, b"llo"),
                deliver_frame(8, false),
                header_frame(0, "m-2"),
            ],
        );
        let mut output = Vec::new();
        tap.flush(&mut output);
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut taken = Vec::new();
        inbox.take(10, &waker, &mut taken);
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].tag, taken[0].redelivered), (7, true));
        assert_eq!(taken[0].message.body.as_slice(), b"hello");
        assert_eq!(taken[0].message.headers[0].value.as_str(), "m-1");
        assert_eq!((taken[1].tag, taken[1].redelivered), (8, false));
        assert!(taken[1].message.body.is_empty());
    }

    #[test]
    fn only_the_frames_of_deliveries_are_claimed() {
        let tap = tap(Arc::default());
        // basic.cancel from the broker, a heartbeat, a header or body with no delivery open.
        let cancel = frame(screen::FRAME_METHOD, &[0, 60, 0, 30, 0, 0]);
        assert_eq!(tap.claims(cancel[0], &cancel), Some(false));
        assert_eq!(tap.claims(8, &HEARTBEAT), Some(false));
        let header = header_frame(1, "m");
        assert_eq!(tap.claims(header[0], &header), Some(false));
        let body = frame(screen::FRAME_BODY, b"x");
        assert_eq!(tap.claims(body[0], &body), Some(false));
        // Not yet enough of a method frame to tell.
        let deliver = deliver_frame(1, false);
        assert_eq!(tap.claims(deliver[0], &deliver[..9]), None);
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_when_deliveries_arrive() {
        let inbox = Arc::new(Inbox::default());
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut taken = Vec::new();
        inbox.take(10, &waker, &mut taken);
        assert!(taken.is_empty());
        let mut tap = tap(inbox.clone());
        feed(&mut tap, &[deliver_frame(1, false), header_frame(0, "a")]);
        tap.flush(&mut Vec::new());
        feed(&mut tap, &[deliver_frame(2, false), header_frame(0, "b")]);
        tap.flush(&mut Vec::new());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        inbox.take(1, &waker, &mut taken);
        inbox.take(1, &waker, &mut taken);
        assert_eq!(taken.iter().map(|d| d.tag).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn lapin_hears_a_heartbeat_while_deliveries_flow_past_it() {
        let mut tap = tap(Arc::default());
        let mut output = Vec::new();
        tap.flush(&mut output);
        assert!(output.is_empty(), "lapin was fed just now");
        tap.fed -= FEED;
        tap.flush(&mut output);
        assert_eq!(output, HEARTBEAT);
        // Anything else lapin reads counts as well.
        let mut output = vec![1];
        tap.fed -= FEED;
        tap.flush(&mut output);
        assert_eq!(output, [1]);
        assert!(tap.fed.elapsed() < FEED);
    }

    #[test]
    fn frames_that_cannot_be_read_end_the_connection() {
        let mut tap = tap(Arc::default());
        let cut = frame(screen::FRAME_METHOD, &[0, 60, 0, 60, 3, b'a']);
        assert!(tap.read(&cut, 131_072).is_err());
        tap.read(&deliver_frame(1, false), 131_072).unwrap();
        let header = frame(screen::FRAME_HEADER, &[0, 60, 0, 0, 0]);
        assert!(tap.read(&header, 131_072).is_err());
    }
}
