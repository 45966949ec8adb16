//! The frames between the cameras and the one inference thread: one slot per camera, served
//! round-robin, so a camera that samples fast cannot starve the others and a slow model never
//! builds up a queue.
//!
//! A live camera's new frame replaces the one waiting in its slot (the latest frame wins; the
//! older one is handed back to be counted as dropped). A file camera waits for its slot to empty
//! (backpressure), so every sampled frame of a file is processed. The inference thread takes
//! frames camera by camera in turn; it is told the stream has ended once the supervisor has
//! closed the scheduler, every camera's sender is gone and every slot is empty.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::source::Frame;

#[derive(Default)]
pub struct Scheduler {
    inner: Mutex<Inner>,
    ready: Condvar,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    /// Where the next round-robin search starts.
    next: usize,
    /// The supervisor starts no more cameras.
    closed: bool,
    /// The inference thread has stopped: cameras must stop too.
    consumer_gone: bool,
    /// Cameras whose thread ended and whose last frame was taken, not yet told to inference.
    departed: Vec<String>,
}

struct Slot {
    camera: String,
    frame: Option<Frame>,
    /// Live senders for this camera (0 once its thread ended; the slot goes when also empty).
    senders: usize,
}

/// Why [`FrameSender::try_put`] did not take a frame.
pub enum PutError {
    /// The camera's previous frame is still waiting: try again later.
    Full(Frame),
    /// Inference has stopped.
    Closed,
}

/// Why [`Scheduler::recv_timeout`] returned no frame.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvError {
    Timeout,
    /// Closed, no camera left and nothing waiting: inference can stop.
    Finished,
}

impl Scheduler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A camera's handle on its slot (made on first use; a restarted camera reuses it).
    pub fn sender(self: &Arc<Self>, camera: &str) -> FrameSender {
        let mut guard = self.lock();
        let inner = &mut *guard;
        match inner.slots.iter_mut().find(|s| s.camera == camera) {
            Some(slot) => {
                // A camera restarted before its old slot was cleared: it starts afresh too.
                if slot.senders == 0 {
                    inner.departed.push(camera.to_owned());
                }
                slot.senders += 1;
            }
            None => inner.slots.push(Slot { camera: camera.to_owned(), frame: None, senders: 1 }),
        }
        FrameSender { scheduler: self.clone(), camera: camera.to_owned() }
    }

    /// No camera will start any more; once the running ones end and their frames are taken,
    /// `recv_timeout` says `Finished`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The inference thread stopped: every put fails from now on, so cameras stop.
    pub fn consumer_gone(&self) {
        self.lock().consumer_gone = true;
        self.ready.notify_all();
    }

    /// The next frame, taking cameras in turn; waits up to `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvError> {
        let mut inner = self.lock();
        loop {
            let Inner { slots, departed, .. } = &mut *inner;
            slots.retain(|s| {
                let keep = s.senders > 0 || s.frame.is_some();
                if !keep {
                    departed.push(s.camera.clone());
                }
                keep
            });
            let n = inner.slots.len();
            for i in 0..n {
                let index = (inner.next + i) % n;
                if let Some(frame) = inner.slots[index].frame.take() {
                    inner.next = index + 1;
                    drop(inner);
                    self.ready.notify_all(); // a file camera may be waiting for this slot
                    return Ok(frame);
                }
            }
            if inner.closed && inner.slots.is_empty() {
                return Err(RecvError::Finished);
            }
            let (guard, wait) = self.ready.wait_timeout(inner, timeout).unwrap_or_else(|p| p.into_inner());
            inner = guard;
            if wait.timed_out() {
                return Err(RecvError::Timeout);
            }
        }
    }
}

impl Scheduler {
    /// Cameras that stopped (their thread ended and their last frame was served) since the last
    /// call: inference forgets what it kept for them.
    pub fn take_departed(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().departed)
    }
}

/// One camera's way into the scheduler.
pub struct FrameSender {
    scheduler: Arc<Scheduler>,
    camera: String,
}

impl FrameSender {
    /// This camera's slot, unless inference has stopped.
    fn slot<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut Slot, PutError> {
        if inner.consumer_gone {
            return Err(PutError::Closed);
        }
        inner.slots.iter_mut().find(|s| s.camera == self.camera).ok_or(PutError::Closed)
    }

    /// Live sources: puts `frame` in the slot, handing back the older frame it replaced.
    pub fn put_latest(&self, frame: Frame) -> Result<Option<Frame>, PutError> {
        let mut inner = self.scheduler.lock();
        let replaced = self.slot(&mut inner)?.frame.replace(frame);
        drop(inner);
        self.scheduler.ready.notify_all();
        Ok(replaced)
    }

    /// Files: puts `frame` in the slot if it is empty, waiting up to `wait` for it to empty.
    pub fn try_put(&self, frame: Frame, wait: Duration) -> Result<(), PutError> {
        let mut inner = self.scheduler.lock();
        if self.slot(&mut inner)?.frame.is_some() {
            inner = self.scheduler.ready.wait_timeout(inner, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
        let slot = self.slot(&mut inner)?;
        if slot.frame.is_some() {
            return Err(PutError::Full(frame));
        }
        slot.frame = Some(frame);
        drop(inner);
        self.scheduler.ready.notify_all();
        Ok(())
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        let mut inner = self.scheduler.lock();
        if let Some(slot) = inner.slots.iter_mut().find(|s| s.camera == self.camera) {
            slot.senders = slot.senders.saturating_sub(1);
        }
        drop(inner);
        self.scheduler.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(camera: &str, pts_ms: u64) -> Frame {
        let (live, captured, ts, image) = (false, std::time::Instant::now(), 0, image::RgbImage::new(1, 1));
        Frame { camera: camera.into(), live, captured, pts_ms, ts, image }
    }

    const NOW: Duration = Duration::from_millis(1);

    #[test]
    fn cameras_are_served_in_turn_however_fast_one_of_them_is() {
        let scheduler = Scheduler::new();
        let (busy, quiet) = (scheduler.sender("busy"), scheduler.sender("quiet"));
        let mut served = Vec::new();
        for k in 0..3 {
            assert!(busy.put_latest(frame("busy", k)).is_ok());
            if k == 0 {
                assert!(quiet.put_latest(frame("quiet", 0)).is_ok());
            }
            served.push(scheduler.recv_timeout(NOW).expect("a frame").camera.to_string());
        }
        assert_eq!(served, ["busy", "quiet", "busy"]);
    }

    #[test]
    fn a_live_camera_s_newest_frame_replaces_the_waiting_one() {
        let scheduler = Scheduler::new();
        let live = scheduler.sender("live");
        assert!(matches!(live.put_latest(frame("live", 1)), Ok(None)));
        let replaced = live.put_latest(frame("live", 2)).ok().flatten().expect("the older frame comes back");
        assert_eq!(replaced.pts_ms, 1);
        assert_eq!(scheduler.recv_timeout(NOW).expect("a frame").pts_ms, 2);
        assert_eq!(scheduler.recv_timeout(NOW).err(), Some(RecvError::Timeout));
    }

    #[test]
    fn a_file_waits_for_its_slot_and_loses_nothing() {
        let scheduler = Scheduler::new();
        let file = scheduler.sender("file");
        assert!(file.try_put(frame("file", 1), NOW).is_ok());
        assert!(matches!(file.try_put(frame("file", 2), NOW), Err(PutError::Full(f)) if f.pts_ms == 2));
        assert_eq!(scheduler.recv_timeout(NOW).expect("a frame").pts_ms, 1);
        assert!(file.try_put(frame("file", 2), NOW).is_ok());
    }

    #[test]
    fn inference_finishes_once_closed_and_every_camera_and_frame_is_gone() {
        let scheduler = Scheduler::new();
        let file = scheduler.sender("file");
        assert!(file.try_put(frame("file", 1), NOW).is_ok());
        drop(file);
        scheduler.close();
        assert_eq!(scheduler.recv_timeout(NOW).expect("the last frame is still served").pts_ms, 1);
        assert_eq!(scheduler.recv_timeout(NOW).err(), Some(RecvError::Finished));
    }

    #[test]
    fn cameras_stop_putting_once_inference_is_gone() {
        let scheduler = Scheduler::new();
        let live = scheduler.sender("live");
        scheduler.consumer_gone();
        assert!(matches!(live.put_latest(frame("live", 1)), Err(PutError::Closed)));
        assert!(matches!(live.try_put(frame("live", 1), NOW), Err(PutError::Closed)));
    }

    #[test]
    fn a_camera_departs_once_its_thread_ended_and_its_last_frame_was_served() {
        let scheduler = Scheduler::new();
        let file = scheduler.sender("file");
        assert!(file.try_put(frame("file", 1), NOW).is_ok());
        drop(file);
        assert!(scheduler.take_departed().is_empty());
        assert_eq!(scheduler.recv_timeout(NOW).expect("the last frame").pts_ms, 1);
        assert_eq!(scheduler.recv_timeout(NOW).err(), Some(RecvError::Timeout));
        assert_eq!(scheduler.take_departed(), ["file"]);
        assert!(scheduler.take_departed().is_empty());
    }
}
