//! The threads the API's blocking reads run on (the index, crop files, CLIP's text and image
//! towers): a few of their own, at a lower CPU priority than inference, so that a busy page or
//! a script searching in a loop never slows the cameras down (measured in docs/benchmarks.md).

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// How much less CPU the readers get than inference when both want it: nice 10 weighs about a
/// tenth of nice 0 in Linux's scheduler.
const NICENESS: i32 = 10;

pub struct Readers {
    jobs: mpsc::SyncSender<Job>,
    /// Turns: one per thread, held until the read ends (a request that timed out leaves its
    /// read running, and those must not pile up).
    turns: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    /// Starts `threads` reader threads; they end once the `Readers` is dropped.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("glimpse-http-{i}")).spawn(move || serve(&queue))?;
        }
        Ok(Self { jobs, turns: Arc::new(tokio::sync::Semaphore::new(threads)) })
    }

    /// Runs `work` on a reader thread; `None` if the server is stopping or `work` panicked.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let turn = self.turns.clone().acquire_owned().await.ok()?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(work)) {
                let _ = done.send(value);
            }
            drop(turn);
        });
        // Never full: a turn is taken per queued or running job, as many as the queue holds.
        self.jobs.try_send(job).ok()?;
        result.await.ok()
    }
}

fn serve(queue: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // A poisoned lock only means another reader panicked while waiting: the queue is whole.
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return, // the server stopped
        }
    }
}

/// Lowers this thread's priority (raising it back would need privileges, so only these
/// threads are ever lowered).
fn lower_priority() {
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority takes plain integers and changes only this thread's nice value.
    let done = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, NICENESS) };
    if done != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the HTTP readers run at normal priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_on_lowered_threads_and_a_panic_costs_only_its_read() {
        let readers = Readers::start(2).expect("threads");
        let nice = readers.run(|| unsafe { nix::libc::getpriority(nix::libc::PRIO_PROCESS, 0) }).await;
        assert_eq!(nice, Some(NICENESS));
        assert_eq!(readers.run(|| -> u8 { panic!("a bad read") }).await, None);
        assert_eq!(readers.run(|| 7).await, Some(7), "the thread lives on");
    }
}
