//! The running cameras: one thread each, started, stopped, paused and resumed only here, and
//! the plan that a reload applies (a pure function, tested without threads).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::camera_state::{CameraState, CameraStates};
use crate::schedule::Scheduler;
use crate::shutdown::{Shutdown, StopOne};
use crate::source::{self, CameraConfig, CameraLinks};
use crate::stats::Stats;
use crate::systemd_notify::Heartbeats;

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("no camera named {name:?}; cameras: {known}")]
    Unknown { name: String, known: String },
    #[error("camera {0} is no longer configured")]
    NotConfigured(String),
    #[error("the daemon is finishing; no camera can start")]
    Finishing,
    #[error("cannot start thread {name}: {source}")]
    Thread { name: String, source: std::io::Error },
}

/// What a reload does to the cameras.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub remove: Vec<String>,
    pub add: Vec<String>,
    /// Running with other settings: stopped and started again.
    pub restart: Vec<String>,
    /// Unchanged, or paused and still configured: not touched.
    pub untouched: Vec<String>,
}

impl Plan {
    pub fn summary(&self) -> String {
        let [added, removed, changed, untouched] = [&self.add, &self.remove, &self.restart, &self.untouched].map(Vec::len);
        format!("{added} camera(s) added, {removed} removed, {changed} restarted with new settings, {untouched} untouched")
    }
}

/// The plan that takes `running` (by name, with their settings) and `paused` to `wanted`.
pub fn plan(running: &BTreeMap<String, CameraConfig>, paused: &BTreeSet<String>, wanted: &[CameraConfig]) -> Plan {
    let wanted_names: BTreeSet<&str> = wanted.iter().map(|c| c.name.as_str()).collect();
    let mut plan =
        Plan { remove: running.keys().chain(paused).filter(|n| !wanted_names.contains(n.as_str())).cloned().collect(), ..Plan::default() };
    for camera in wanted {
        let name = camera.name.clone();
        match running.get(&camera.name) {
            Some(current) if current == camera => plan.untouched.push(name),
            Some(_) => plan.restart.push(name),
            None if paused.contains(&camera.name) => plan.untouched.push(name),
            None => plan.add.push(name),
        }
    }
    plan
}

/// Where camera threads report and send their frames.
pub struct CameraLinksFactory {
    pub stats: Arc<Stats>,
    pub states: Arc<CameraStates>,
    pub heartbeats: Arc<Heartbeats>,
    pub shutdown: Shutdown,
}

/// The running camera threads, by name.
pub struct Cameras {
    running: BTreeMap<String, RunningCamera>,
    /// Cameras an operator paused; they stay stopped across reloads until resumed.
    paused: BTreeSet<String>,
    /// Where new camera threads send frames; `None` once `--exit-when-done` saw every file end.
    frames: Option<Arc<Scheduler>>,
    links: CameraLinksFactory,
}

struct RunningCamera {
    config: CameraConfig,
    stop: StopOne,
    thread: JoinHandle<()>,
}

impl Cameras {
    pub fn new(frames: Arc<Scheduler>, links: CameraLinksFactory) -> Self {
        Self { running: BTreeMap::new(), paused: BTreeSet::new(), frames: Some(frames), links }
    }

    pub fn count(&self) -> usize {
        self.running.len()
    }

    pub fn start(&mut self, camera: CameraConfig) -> Result<(), CameraError> {
        let name = camera.name.clone();
        self.links.states.add(&name);
        let stats = self.links.stats.camera(&name);
        if self.paused.contains(&name) {
            self.links.states.set(&name, CameraState::Offline, Some("paused".into()));
            return Ok(());
        }
        let frames = self.frames.as_ref().ok_or(CameraError::Finishing)?.sender(&name);
        let (stop, listener) = self.links.shutdown.with_own_stop();
        let links = CameraLinks {
            stats,
            states: self.links.states.clone(),
            frames,
            heartbeat: self.links.heartbeats.register(&format!("camera {name}")),
            stop: listener,
        };
        let thread_name = format!("cam-{name}");
        let config = camera.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || source::run_camera(config, links))
            .map_err(|source| CameraError::Thread { name: thread_name, source })?;
        self.running.insert(name, RunningCamera { config: camera, stop, thread });
        Ok(())
    }

    fn stop(&mut self, name: &str) {
        if let Some(camera) = self.running.remove(name) {
            camera.stop.stop();
            if camera.thread.join().is_err() {
                tracing::error!(camera = name, "camera thread panicked");
            }
        }
        self.links.heartbeats.unregister(&format!("camera {name}"));
    }

    /// Stops every camera (all asked first, then joined).
    pub fn stop_all(&mut self) {
        for camera in self.running.values() {
            camera.stop.stop();
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
    }

    pub fn all_finished(&self) -> bool {
        self.running.values().all(|c| c.thread.is_finished())
    }

    /// No camera will start any more (`--exit-when-done` saw every file end): inference may finish.
    pub fn close(&mut self) {
        if let Some(frames) = self.frames.take() {
            frames.close();
        }
    }

    /// Applies a new camera list: removed cameras stop, new ones start, changed ones restart,
    /// the rest are not touched.
    pub fn apply(&mut self, wanted: &[CameraConfig]) -> Result<Plan, CameraError> {
        let running: BTreeMap<String, CameraConfig> = self.running.iter().map(|(n, c)| (n.clone(), c.config.clone())).collect();
        let plan = plan(&running, &self.paused, wanted);
        for name in &plan.remove {
            self.stop(name);
            self.paused.remove(name);
            self.links.stats.remove_camera(name);
            self.links.states.remove(name);
        }
        for camera in wanted.iter().filter(|c| plan.restart.contains(&c.name) || plan.add.contains(&c.name)) {
            self.stop(&camera.name);
            self.start(camera.clone())?;
        }
        Ok(plan)
    }

    fn known(&self) -> String {
        self.running.keys().chain(self.paused.iter()).cloned().collect::<Vec<_>>().join(", ")
    }

    pub fn pause(&mut self, name: &str) -> Result<String, CameraError> {
        if self.paused.contains(name) {
            return Ok(format!("camera {name} was already paused"));
        }
        if !self.running.contains_key(name) {
            return Err(CameraError::Unknown { name: name.to_owned(), known: self.known() });
        }
        self.stop(name);
        self.paused.insert(name.to_owned());
        self.links.states.set(name, CameraState::Offline, Some("paused".into()));
        Ok(format!("camera {name} paused"))
    }

    pub fn resume(&mut self, name: &str, configured: &[CameraConfig]) -> Result<String, CameraError> {
        if !self.paused.remove(name) {
            return match self.running.contains_key(name) {
                true => Ok(format!("camera {name} was not paused")),
                false => Err(CameraError::Unknown { name: name.to_owned(), known: self.known() }),
            };
        }
        let camera = configured.iter().find(|c| c.name == name).cloned().ok_or_else(|| CameraError::NotConfigured(name.to_owned()))?;
        self.start(camera)?;
        Ok(format!("camera {name} resumed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(name: &str, fps: f64) -> CameraConfig {
        let toml = format!("name = \"{name}\"\nuri = \"test:\"\nsample_fps = {fps}");
        toml::from_str(&toml).expect("a camera")
    }

    #[test]
    fn a_reload_touches_only_the_cameras_whose_settings_changed() {
        let running = BTreeMap::from([("door".to_owned(), camera("door", 1.0)), ("yard".to_owned(), camera("yard", 1.0))]);
        let paused = BTreeSet::from(["shed".to_owned(), "attic".to_owned()]);
        let wanted = [camera("door", 1.0), camera("yard", 2.0), camera("gate", 1.0), camera("shed", 1.0)];
        let plan = plan(&running, &paused, &wanted);
        assert_eq!(
            plan,
            Plan {
                remove: vec!["attic".into()],
                add: vec!["gate".into()],
                restart: vec!["yard".into()],
                untouched: vec!["door".into(), "shed".into()]
            }
        );
        assert_eq!(plan.summary(), "1 camera(s) added, 1 removed, 1 restarted with new settings, 2 untouched");
    }

    #[test]
    fn the_same_list_again_changes_nothing() {
        let running = BTreeMap::from([("door".to_owned(), camera("door", 1.0))]);
        let plan = plan(&running, &BTreeSet::new(), &[camera("door", 1.0)]);
        assert_eq!(plan, Plan { untouched: vec!["door".into()], ..Plan::default() });
    }
}
