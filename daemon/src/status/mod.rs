//! Health and statistics over MQTT (or to the log when `[mqtt]` is absent). The only module that
//! speaks MQTT.
//!
//! Topics (see docs/mqtt.md):
//! - `{prefix}/{device}/availability`: retained `online`; the broker publishes the retained last
//!   will `offline` if the device vanishes, and the daemon publishes `offline` on clean shutdown.
//! - `{prefix}/{device}/stats`: JSON [`crate::stats::Snapshot`] every `stats_interval_s`.
//! - `{prefix}/{device}/cameras/{name}/status`: retained `online`, `offline` or `error`.
//!
//! The rumqttc event loop is polled continuously (its `publish` only queues), publishing never
//! waits on the broker (`try_publish`), and after every (re)connection availability and the
//! camera statuses are published again, because a broker restart may have lost them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{KeyPath, Problem};
use crate::stats::{CameraStatus, Stats};

/// `[mqtt]`: the broker that operators watch. Absent: status goes to the log only.
#[derive(Clone, Debug, Deserialize)]
pub struct MqttConfig {
    pub host: String,
    /// Default 1883.
    #[serde(default = "default_port")]
    pub port: u16,
    /// First level of every topic. Default "glimpse".
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Seconds between stats messages. Default 60.
    #[serde(default = "default_stats_interval_s")]
    pub stats_interval_s: f64,
    /// Optional broker login; the password comes from `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive in seconds; the broker declares the device gone after 1.5 times this.
    /// Default 30.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
}

fn default_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "glimpse".into()
}
fn default_stats_interval_s() -> f64 {
    60.0
}
fn default_keep_alive_s() -> u64 {
    30
}

impl MqttConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if self.host.trim().is_empty() {
            problems.push(Problem::new(at.key("host"), "must name the broker, e.g. \"127.0.0.1\""));
        }
        let p = &self.topic_prefix;
        if p.is_empty() || p.contains(['+', '#', '\0']) || p.starts_with('/') || p.ends_with('/') {
            problems.push(Problem::new(at.key("topic_prefix"), "must be non-empty, without '+', '#' or a leading or trailing '/'"));
        }
        if !(self.stats_interval_s >= 1.0 && self.stats_interval_s <= 86_400.0) {
            problems.push(Problem::new(at.key("stats_interval_s"), "must be between 1 and 86400 seconds"));
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            problems.push(Problem::new(at.key("keep_alive_s"), "must be between 5 and 3600 seconds"));
        }
        if self.password_file.is_some() && self.username.is_none() {
            problems.push(Problem::new(at.key("password_file"), "a password needs a username: set mqtt.username too"));
        }
    }
}

struct Topics {
    availability: String,
    stats: String,
    camera_prefix: String,
}

impl Topics {
    fn new(prefix: &str, device: &str) -> Self {
        Self {
            availability: format!("{prefix}/{device}/availability"),
            stats: format!("{prefix}/{device}/stats"),
            camera_prefix: format!("{prefix}/{device}/cameras"),
        }
    }

    fn camera(&self, name: &str) -> String {
        format!("{}/{name}/status", self.camera_prefix)
    }
}

/// Publishes status until `shutdown` turns true, then says goodbye (`offline`).
pub async fn run_status(config: Option<MqttConfig>, device: String, stats: Arc<Stats>, shutdown: watch::Receiver<bool>) {
    match config {
        Some(config) => run_mqtt(config, device, stats, shutdown).await,
        None => run_log_only(device, stats, shutdown).await,
    }
}

async fn run_log_only(device: String, stats: Arc<Stats>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => log_snapshot(&stats, &device),
            _ = shutdown.changed() => break,
        }
    }
    log_snapshot(&stats, &device);
}

fn log_snapshot(stats: &Stats, device: &str) {
    match serde_json::to_string(&stats.snapshot(device)) {
        Ok(json) => tracing::info!(stats = %json, "stats"),
        Err(e) => tracing::warn!(error = %e, "cannot serialise stats"),
    }
}

async fn run_mqtt(config: MqttConfig, device: String, stats: Arc<Stats>, mut shutdown: watch::Receiver<bool>) {
    let topics = Topics::new(&config.topic_prefix, &device);
    let mut options = MqttOptions::new(format!("glimpse-{device}"), config.host.clone(), config.port);
    options.set_keep_alive(Duration::from_secs(config.keep_alive_s));
    options.set_last_will(LastWill::new(&topics.availability, "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &config.username {
        let password = match &config.password_file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(p) => p.trim().to_owned(),
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "cannot read the MQTT password file; connecting without a password");
                    String::new()
                }
            },
            None => String::new(),
        };
        options.set_credentials(user.clone(), password);
    }
    let (client, mut events) = AsyncClient::new(options, 256);
    let mut statuses = stats.camera_statuses();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(config.stats_interval_s));
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut connected = false;
    let publish = |topic: &str, retain: bool, payload: Vec<u8>| {
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            tracing::warn!(topic, error = %e, "MQTT publish queue full; message dropped");
        }
    };
    let publish_statuses = |all: &BTreeMap<String, CameraStatus>| {
        for (name, status) in all {
            publish(&topics.camera(name), true, status.state.as_str().as_bytes().to_vec());
        }
    };
    let publish_stats = || match serde_json::to_vec(&stats.snapshot(&device)) {
        Ok(json) => publish(&topics.stats, false, json),
        Err(e) => tracing::warn!(error = %e, "cannot serialise stats"),
    };
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(host = %config.host, port = config.port, "MQTT connected");
                    connected = true;
                    backoff.reset();
                    publish(&topics.availability, true, b"online".to_vec());
                    publish_statuses(&statuses.borrow_and_update());
                    publish_stats();
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::debug!(error = %e, "MQTT broker unreachable; retrying");
                    }
                    connected = false;
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            },
            _ = tick.tick() => publish_stats(),
            Ok(()) = statuses.changed() => publish_statuses(&statuses.borrow_and_update()),
            _ = shutdown.changed() => break,
        }
    }
    if !connected {
        log_snapshot(&stats, &device);
        return;
    }
    // Goodbye: final stats, every camera offline, then availability offline, then DISCONNECT;
    // the event loop keeps running until the DISCONNECT has gone out.
    publish_stats();
    for name in stats.camera_statuses().borrow().keys() {
        publish(&topics.camera(name), true, b"offline".to_vec());
    }
    publish(&topics.availability, true, b"offline".to_vec());
    if let Err(e) = client.try_disconnect() {
        tracing::warn!(error = %e, "cannot queue the MQTT disconnect");
    }
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("MQTT goodbye not confirmed within 5 s");
    }
}
