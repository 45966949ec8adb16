//! One shutdown, fanned out to every stage (mini-redis's `Shutdown` is the model): the
//! supervisor holds the [`Trigger`]; every stage holds a [`Shutdown`] and checks it (threads)
//! or awaits it (tasks).
//!
//! Shutdown has two steps, because the data must drain in order: at *stopping* the sources,
//! the syncer and every other stage wind down, while the supervisor joins them in data order
//! (sources, inference, keeper, syncer); at *stopped* the stages that report on the
//! others (MQTT status, which says `offline` last, and the watchdog) finish too.
//!
//! A camera thread also stops alone when a reload removes it: [`Shutdown::with_own_stop`] gives
//! it a listener that hears both its own [`StopOne`] and the whole daemon's shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Running,
    Stopping,
    Stopped,
}

/// The supervisor's end: moves every listener to the next step.
pub struct Trigger(watch::Sender<Step>);

/// A stage's end.
#[derive(Clone)]
pub struct Shutdown {
    step: watch::Receiver<Step>,
    own: Option<Arc<AtomicBool>>,
}

/// Stops one camera without stopping the daemon.
pub struct StopOne(Arc<AtomicBool>);

impl StopOne {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A new trigger and its first listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(Step::Running);
    (Trigger(tx), Shutdown { step: rx, own: None })
}

impl Trigger {
    /// The stages wind down; their data drains.
    pub fn begin(&self) {
        self.0.send_if_modified(|step| {
            let running = *step == Step::Running;
            if running {
                *step = Step::Stopping;
            }
            running
        });
    }

    /// Everything upstream has finished: the reporting stages finish too.
    pub fn finish(&self) {
        self.0.send_replace(Step::Stopped);
    }

    pub fn listener(&self) -> Shutdown {
        Shutdown { step: self.0.subscribe(), own: None }
    }
}

impl Shutdown {
    /// True once shutdown began (or this listener's own stop was asked for).
    pub fn is_shutdown(&self) -> bool {
        *self.step.borrow() >= Step::Stopping || self.own.as_ref().is_some_and(|own| own.load(Ordering::Relaxed))
    }

    /// Waits until shutdown begins; at once if it already has.
    pub async fn recv(&mut self) {
        let _ = self.step.wait_for(|step| *step >= Step::Stopping).await;
    }

    /// Waits until every stage upstream of the reporting ones has finished.
    pub async fn recv_stopped(&mut self) {
        let _ = self.step.wait_for(|step| *step == Step::Stopped).await;
    }

    /// A listener that also hears its own stop, for one camera among several.
    pub fn with_own_stop(&self) -> (StopOne, Shutdown) {
        let own = Arc::new(AtomicBool::new(false));
        (StopOne(own.clone()), Shutdown { step: self.step.clone(), own: Some(own) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_trigger_reaches_every_listener_in_two_steps() {
        let (trigger, mut stage) = channel();
        let mut reporter = trigger.listener();
        let (one, camera) = stage.with_own_stop();
        assert!(!stage.is_shutdown() && !camera.is_shutdown());
        one.stop();
        assert!(camera.is_shutdown() && !stage.is_shutdown(), "a camera stops alone");
        trigger.begin();
        stage.recv().await;
        assert!(stage.is_shutdown());
        let waiting = tokio::spawn(async move { reporter.recv_stopped().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "reporters wait for the end of the drain");
        trigger.finish();
        waiting.await.expect("the reporter finished");
    }
}
