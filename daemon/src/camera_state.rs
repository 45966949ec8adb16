//! Each camera's state as operators see it on `{prefix}/{device}/cameras/{name}/status`: the
//! sources set it, `status/` publishes it, the stats report it. Latest value wins (a watch
//! channel), and a change is logged once, as a typed event.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    Online,
    Offline,
    Error,
}

impl CameraState {
    pub fn as_str(&self) -> &'static str {
        match self {
            CameraState::Online => "online",
            CameraState::Offline => "offline",
            CameraState::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CameraStatus {
    pub state: CameraState,
    /// Why the camera is not online, with credentials already redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every camera's status, by name.
pub struct CameraStates(watch::Sender<BTreeMap<String, CameraStatus>>);

impl Default for CameraStates {
    fn default() -> Self {
        Self(watch::Sender::new(BTreeMap::new()))
    }
}

impl CameraStates {
    /// A camera appears as offline, "starting" (unless it is already known).
    pub fn add(&self, camera: &str) {
        let starting = CameraStatus { state: CameraState::Offline, reason: Some("starting".into()) };
        self.0.send_if_modified(|all| {
            let new = !all.contains_key(camera);
            all.entry(camera.to_owned()).or_insert(starting);
            new
        });
    }

    /// Forgets a camera removed from the configuration.
    pub fn remove(&self, camera: &str) {
        self.0.send_if_modified(|all| all.remove(camera).is_some());
    }

    /// Records a camera's new state; logs and notifies `status/` only when it changed.
    pub fn set(&self, camera: &str, state: CameraState, reason: Option<String>) {
        let status = CameraStatus { state, reason };
        self.0.send_if_modified(|all| match all.get_mut(camera) {
            Some(current) if *current != status => {
                tracing::info!(
                    event = "camera_status",
                    camera,
                    state = status.state.as_str(),
                    reason = status.reason.as_deref().unwrap_or(""),
                    "camera status"
                );
                *current = status;
                true
            }
            _ => false,
        });
    }

    pub fn is(&self, camera: &str, state: CameraState) -> bool {
        self.0.borrow().get(camera).is_some_and(|s| s.state == state)
    }

    pub fn current(&self) -> BTreeMap<String, CameraStatus> {
        self.0.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, CameraStatus>> {
        self.0.subscribe()
    }
}
