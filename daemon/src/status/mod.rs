//! Health and statistics over MQTT (or to the log when `[mqtt]` is absent). The only module that
//! speaks MQTT.
//!
//! Topics (see docs/mqtt.md):
//! - `{prefix}/{device}/availability`: retained `online`; the broker publishes the retained last
//!   will `offline` if the device vanishes, and the daemon publishes `offline` on clean shutdown.
//! - `{prefix}/{device}/stats`: JSON [`crate::stats::Snapshot`] every `stats_interval_s`.
//! - `{prefix}/{device}/cameras/{name}/status`: retained `online`, `offline` or `error`.
//!
//! - `{prefix}/{device}/cameras/{name}/reason`: retained; why the camera is not online ("" when it is).
//! - `{prefix}/{device}/cmd` → `{prefix}/{device}/cmd/result`: operator commands (opt-in).
//! - `{prefix}/{device}/events`: object events; `{prefix}/{device}/triggers/{name}`: trigger
//!   matches. Both come from the inference thread through a bounded queue, which is drained only
//!   while connected and only as fast as the client takes them, so an outage fills the queue
//!   (then drops, counted) instead of losing messages inside the client.
//!
//! The rumqttc event loop is polled continuously (its `publish` only queues), publishing never
//! waits on the broker (`try_publish`), and after every (re)connection availability, the camera
//! statuses and Home Assistant discovery are published again, and the command topic subscribed
//! again, because a broker restart may have lost them.

mod discovery;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::{self, Request};
use crate::events::{self, Message};
use discovery::Discovery;

use crate::backoff::Backoff;
use crate::camera_state::{CameraStates, CameraStatus};
use crate::secrets::SecretError;
use crate::shutdown::Shutdown;
use crate::stats::{Snapshot, Stats};
use crate::validate::{KeyPath, Problem};

/// Turns the stats into the stats JSON, with rates since the previous report.
pub struct Reporter {
    device: String,
    stats: Arc<Stats>,
    states: Arc<CameraStates>,
    /// The last report's snapshot, which the next report's rates (and [`StatsView`]'s) start from.
    published: watch::Sender<Option<Snapshot>>,
}

impl Reporter {
    pub fn new(device: String, stats: Arc<Stats>, states: Arc<CameraStates>) -> Self {
        Self { device, stats, states, published: watch::Sender::new(None) }
    }

    /// The stats JSON now; the next report's rates start here.
    pub fn report(&mut self) -> serde_json::Value {
        let now = self.stats.snapshot();
        let json = now.report(&self.device, &self.states.current(), self.published.borrow().as_ref());
        self.published.send_replace(Some(now));
        json
    }

    /// A reader of the same JSON for the HTTP API, which changes nothing of the reports.
    pub fn view(&self) -> StatsView {
        StatsView {
            device: self.device.clone(),
            stats: self.stats.clone(),
            states: self.states.clone(),
            published: self.published.subscribe(),
        }
    }

    fn log(&mut self) {
        tracing::info!(event = "stats", stats = %self.report(), "stats");
    }
}

/// `[mqtt]`: the broker that operators watch. Absent: status goes to the log only.
#[derive(Clone, Debug, PartialEq, Deserialize)]
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
    /// Optional broker login. The password comes from `password_file`, else from the systemd
    /// credential `mqtt-password`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connect with TLS (mqtts), trusting the CA in `ca_file`. Default false.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Optional client certificate and key (PEM) for brokers that require them.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Accept commands on `{prefix}/{device}/cmd`. Default false.
    #[serde(default)]
    pub commands: bool,
    /// Announce sensors to Home Assistant (MQTT discovery). Default false.
    #[serde(default)]
    pub ha_discovery: bool,
    /// Home Assistant's discovery prefix. Default "homeassistant".
    #[serde(default = "default_ha_prefix")]
    pub ha_prefix: String,
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
fn default_ha_prefix() -> String {
    "homeassistant".into()
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
        if self.tls && self.ca_file.is_none() {
            problems.push(Problem::new(at.key("ca_file"), "tls = true needs the broker's CA certificate (PEM) in mqtt.ca_file"));
        }
        if !self.tls && (self.ca_file.is_some() || self.client_cert_file.is_some()) {
            problems.push(Problem::new(at.key("tls"), "certificates are set but tls is false: set mqtt.tls = true"));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            problems.push(Problem::new(
                at.key("client_cert_file"),
                "a client certificate needs its key: set both client_cert_file and client_key_file",
            ));
        }
    }

    /// Why the broker password would cross the network readable, if it would: a login without
    /// TLS to a broker that is not on this machine (`glimpse check` warns).
    pub fn cleartext_password_warning(&self) -> Option<String> {
        let has_password = crate::secrets::secret_file(self.password_file.as_deref(), "mqtt-password").is_some();
        let loopback = crate::validate::is_loopback(&self.host);
        (self.username.is_some() && has_password && !self.tls && !loopback).then(|| {
            format!(
                "mqtt: the password for {} travels unencrypted to {}:{}; set mqtt.tls = true with the broker's CA in mqtt.ca_file",
                self.username.as_deref().unwrap_or_default(),
                self.host,
                self.port
            )
        })
    }

    /// The broker password: `password_file`, else the systemd credential `mqtt-password`.
    fn password(&self) -> Result<String, SecretError> {
        match crate::secrets::secret_file(self.password_file.as_deref(), "mqtt-password") {
            Some(file) => crate::secrets::read_secret(&file, "MQTT password"),
            None => Ok(String::new()),
        }
    }

    fn options(&self, device: &str, will_topic: &str) -> Result<MqttOptions, SetupError> {
        let mut options = MqttOptions::new(format!("glimpse-{device}"), self.host.clone(), self.port);
        options.set_keep_alive(Duration::from_secs(self.keep_alive_s));
        options.set_last_will(LastWill::new(will_topic, "offline", QoS::AtLeastOnce, true));
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password()?);
        }
        if self.tls {
            crate::tls::use_ring();
            let read = |p: &PathBuf| std::fs::read(p).map_err(|source| SetupError::Unreadable { file: p.clone(), source });
            let ca = read(self.ca_file.as_ref().ok_or(SetupError::NoCa)?)?;
            let client_auth = match (&self.client_cert_file, &self.client_key_file) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            };
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
        }
        Ok(options)
    }
}

/// Why the MQTT connection cannot even be set up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot read {}: {source}", file.display())]
    Unreadable { file: PathBuf, source: std::io::Error },
    #[error("mqtt.ca_file is not set")]
    NoCa,
}

/// A trigger as Home Assistant shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerEntity {
    pub name: String,
    pub cooldown_s: f64,
}

/// What the inference thread tells the broker, and the triggers to announce.
pub struct BrokerFeed {
    pub messages: events::Receiver,
    pub triggers: watch::Receiver<Vec<TriggerEntity>>,
}

struct Topics {
    /// `{prefix}/{device}`
    device_prefix: String,
    events: String,
    trigger_prefix: String,
    availability: String,
    stats: String,
    camera_prefix: String,
    command: String,
    command_result: String,
}

impl Topics {
    fn new(prefix: &str, device: &str) -> Self {
        Self {
            device_prefix: format!("{prefix}/{device}"),
            events: format!("{prefix}/{device}/events"),
            trigger_prefix: format!("{prefix}/{device}/triggers"),
            availability: format!("{prefix}/{device}/availability"),
            stats: format!("{prefix}/{device}/stats"),
            camera_prefix: format!("{prefix}/{device}/cameras"),
            command: format!("{prefix}/{device}/cmd"),
            command_result: format!("{prefix}/{device}/cmd/result"),
        }
    }

    fn camera(&self, name: &str) -> String {
        format!("{}/{name}/status", self.camera_prefix)
    }

    fn trigger(&self, name: &str) -> String {
        format!("{}/{name}", self.trigger_prefix)
    }

    /// `{prefix}/{device}/{camera}/{label}/snapshot`, or without a label
    /// `{prefix}/{device}/cameras/{camera}/snapshot`.
    fn snapshot(&self, camera: &str, label: Option<&str>) -> String {
        match label {
            Some(label) => format!("{}/{camera}/{label}/snapshot", self.device_prefix),
            None => format!("{}/{camera}/snapshot", self.camera_prefix),
        }
    }

    fn camera_reason(&self, name: &str) -> String {
        format!("{}/{name}/reason", self.camera_prefix)
    }
}

/// Publishes status until every other stage has stopped, then says goodbye (`offline`).
/// Commands go to `commands` when `[mqtt] commands = true`.
pub async fn run_status(
    config: Option<MqttConfig>,
    reporter: Reporter,
    commands: mpsc::Sender<Request>,
    feed: Option<BrokerFeed>,
    public_base: Option<String>,
    shutdown: Shutdown,
) {
    let device = reporter.device.clone();
    match config {
        Some(config) => match config.options(&device, &Topics::new(&config.topic_prefix, &device).availability) {
            Ok(options) => Mqtt::new(config, options, reporter, commands, feed).with_public_base(public_base).run(shutdown).await,
            Err(e) => {
                tracing::error!(error = %e, "MQTT is configured but cannot be set up; status goes to the log only");
                run_log_only(reporter, shutdown).await
            }
        },
        None => run_log_only(reporter, shutdown).await,
    }
}

/// The stats JSON as MQTT publishes it, now, with rates since the last published report.
#[derive(Clone)]
pub struct StatsView {
    device: String,
    stats: Arc<Stats>,
    states: Arc<CameraStates>,
    published: watch::Receiver<Option<Snapshot>>,
}

impl StatsView {
    pub fn current(&self) -> serde_json::Value {
        self.stats.snapshot().report(&self.device, &self.states.current(), self.published.borrow().as_ref())
    }

    /// Each camera's stats, which already carry its `status` and `reason`, with the status
    /// also as `state` (the camera states' own name for it).
    pub fn cameras(&self) -> serde_json::Value {
        let mut cameras = self.current()["cameras"].take();
        for camera in cameras.as_object_mut().into_iter().flat_map(|c| c.values_mut()).filter_map(|c| c.as_object_mut()) {
            let state = camera.get("status").cloned().unwrap_or_default();
            camera.insert("state".into(), state);
        }
        cameras
    }
}

async fn run_log_only(mut reporter: Reporter, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => reporter.log(),
            _ = shutdown.recv_stopped() => break,
        }
    }
    reporter.log();
}

struct Mqtt {
    config: MqttConfig,
    topics: Topics,
    device: String,
    reporter: Reporter,
    client: AsyncClient,
    events: rumqttc::EventLoop,
    commands: mpsc::Sender<Request>,
    /// Cameras whose retained topics we published, so removed ones can be cleared.
    announced: BTreeMap<String, CameraStatus>,
    messages: Option<events::Receiver>,
    triggers: Option<watch::Receiver<Vec<TriggerEntity>>>,
    /// A message the client had no room for; it goes first once the client took others.
    held: Option<Message>,
    /// Triggers whose discovery entities we published, so removed ones can be cleared.
    announced_triggers: Vec<TriggerEntity>,
    /// `[http] public_url`: payloads that name a record carry `record_url` under it.
    public_base: Option<String>,
}

impl Mqtt {
    fn new(
        config: MqttConfig,
        options: MqttOptions,
        reporter: Reporter,
        commands: mpsc::Sender<Request>,
        feed: Option<BrokerFeed>,
    ) -> Self {
        let (client, events) = AsyncClient::new(options, 256);
        let device = reporter.device.clone();
        let topics = Topics::new(&config.topic_prefix, &device);
        let (announced, held, announced_triggers) = (BTreeMap::new(), None, Vec::new());
        let (messages, triggers) = feed.map(|f| (f.messages, f.triggers)).unzip();
        let public_base = None;
        Self {
            config,
            topics,
            device,
            reporter,
            client,
            events,
            commands,
            announced,
            messages,
            triggers,
            held,
            announced_triggers,
            public_base,
        }
    }

    fn with_public_base(mut self, public_base: Option<String>) -> Self {
        self.public_base = public_base;
        self
    }

    /// `message` as JSON, with `record_url` when it names a record and the box has a public URL.
    fn payload(&self, message: serde_json::Result<serde_json::Value>, record: Option<&str>) -> Vec<u8> {
        let mut message = message.unwrap_or_default();
        if let (Some(base), Some(id)) = (&self.public_base, record) {
            message["record_url"] = serde_json::json!(format!("{base}/records/{id}"));
        }
        serde_json::to_vec(&message).unwrap_or_default()
    }

    /// Hands one object event or trigger match to the client; `false` (and the message held)
    /// when the client's queue is full.
    fn publish_message(&mut self, message: Message) -> bool {
        let published = match &message {
            Message::Track(event) => {
                let payload = self.payload(serde_json::to_value(event), event.record_id.as_deref());
                self.client.try_publish(self.topics.events.clone(), QoS::AtLeastOnce, false, payload)
            }
            Message::Match(matched) => {
                let payload = self.payload(serde_json::to_value(matched), Some(&matched.record_id));
                self.client.try_publish(self.topics.trigger(&matched.trigger), QoS::AtLeastOnce, false, payload)
            }
            Message::Picture(picture) => self.publish_picture(picture),
        };
        match published {
            Ok(()) => {
                self.reporter.stats.event_published();
                true
            }
            Err(_) => {
                self.held = Some(message);
                false
            }
        }
    }

    /// A new track's crop, retained on its camera's and label's snapshot topic and on its
    /// camera's (the latest of any label, which Home Assistant's camera entity shows); a
    /// trigger's match on the trigger's (its image entity).
    fn publish_picture(&self, picture: &events::Picture) -> Result<(), rumqttc::ClientError> {
        if let Some(trigger) = &picture.trigger {
            let topic = format!("{}/snapshot", self.topics.trigger(trigger));
            return self.client.try_publish(topic, QoS::AtLeastOnce, true, picture.jpeg.to_vec());
        }
        let by_label = self.topics.snapshot(&picture.camera, Some(&picture.label));
        self.client.try_publish(by_label, QoS::AtLeastOnce, true, picture.jpeg.to_vec())?;
        self.client.try_publish(self.topics.snapshot(&picture.camera, None), QoS::AtLeastOnce, true, picture.jpeg.to_vec())
    }

    /// The held message, then as many queued ones as the client takes now.
    fn drain_messages(&mut self) {
        if let Some(message) = self.held.take() {
            if !self.publish_message(message) {
                return;
            }
        }
        while let Some(message) = self.messages.as_mut().and_then(|m| m.try_recv().ok()) {
            if !self.publish_message(message) {
                return;
            }
        }
    }

    /// Inference has stopped: its last messages (every open track's `end`) go out before
    /// `offline`, as fast as the client takes them, for at most 5 s.
    async fn flush_messages(&mut self) {
        let flushed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                self.drain_messages();
                let queued = self.messages.as_ref().is_some_and(|m| !m.is_empty());
                if self.held.is_none() && !queued {
                    break;
                }
                if self.events.poll().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if flushed.is_err() || self.held.is_some() {
            tracing::warn!("not every object event reached the MQTT client before stopping");
        }
    }

    /// Home Assistant entities for the configured triggers; removed triggers' are cleared.
    fn announce_triggers(&mut self, force: bool) {
        let Some(triggers) = &mut self.triggers else { return };
        let current = triggers.borrow_and_update().clone();
        if !self.config.ha_discovery || (!force && current == self.announced_triggers) {
            return;
        }
        for gone in self.announced_triggers.iter().filter(|t| !current.iter().any(|c| c.name == t.name)) {
            for (topic, _) in self.discovery().trigger_entities(&gone.name, gone.cooldown_s) {
                self.publish(&topic, true, Vec::new());
            }
        }
        for trigger in &current {
            for (topic, config) in self.discovery().trigger_entities(&trigger.name, trigger.cooldown_s) {
                self.publish(&topic, true, config.to_string());
            }
        }
        self.announced_triggers = current;
    }

    fn publish(&self, topic: &str, retain: bool, payload: impl Into<Vec<u8>>) {
        if let Err(e) = self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            tracing::warn!(topic, error = %e, "MQTT publish queue full; message dropped");
        }
    }

    fn publish_stats(&mut self) {
        let json = self.reporter.report().to_string();
        self.publish(&self.topics.stats, false, json);
    }

    fn discovery(&self) -> Discovery<'_> {
        Discovery { ha_prefix: &self.config.ha_prefix, topic_prefix: &self.config.topic_prefix, device: &self.device }
    }

    /// Publishes every camera's state (all of them with `force`, else only changes) and clears
    /// the retained topics of cameras that no longer exist.
    fn publish_statuses(&mut self, all: &BTreeMap<String, CameraStatus>, force: bool) {
        let removed: Vec<String> = self.announced.keys().filter(|k| !all.contains_key(*k)).cloned().collect();
        for name in removed {
            self.publish(&self.topics.camera(&name), true, Vec::new());
            self.publish(&self.topics.camera_reason(&name), true, Vec::new());
            if self.config.ha_discovery {
                for (topic, _) in self.discovery().camera_sensors(&name) {
                    self.publish(&topic, true, Vec::new());
                }
            }
            self.announced.remove(&name);
        }
        for (name, status) in all {
            if !force && self.announced.get(name) == Some(status) {
                continue;
            }
            if self.config.ha_discovery && (force || !self.announced.contains_key(name)) {
                for (topic, config) in self.discovery().camera_sensors(name) {
                    self.publish(&topic, true, config.to_string());
                }
            }
            self.publish(&self.topics.camera(name), true, status.state.as_str());
            self.publish(&self.topics.camera_reason(name), true, status.reason.clone().unwrap_or_default());
            self.announced.insert(name.clone(), status.clone());
        }
    }

    fn announce_device(&self) {
        if self.config.ha_discovery {
            for (topic, config) in self.discovery().device_sensors() {
                self.publish(&topic, true, config.to_string());
            }
        }
    }

    /// Everything a (re)connection needs: retained state again, subscriptions again.
    fn on_connected(&mut self, statuses: &BTreeMap<String, CameraStatus>) {
        self.publish(&self.topics.availability, true, "online");
        self.announce_device();
        self.publish_statuses(statuses, true);
        self.announce_triggers(true);
        self.publish_stats();
        let mut subscriptions = Vec::new();
        if self.config.commands {
            subscriptions.push(self.topics.command.clone());
        }
        if self.config.ha_discovery {
            subscriptions.push(format!("{}/status", self.config.ha_prefix));
        }
        for topic in subscriptions {
            if let Err(e) = self.client.try_subscribe(&topic, QoS::AtLeastOnce) {
                tracing::warn!(topic, error = %e, "cannot subscribe");
            }
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], statuses: &BTreeMap<String, CameraStatus>) {
        if self.config.ha_discovery && topic == format!("{}/status", self.config.ha_prefix) {
            if payload == b"online" {
                tracing::info!("Home Assistant came online; announcing sensors again");
                self.announce_device();
                self.publish_statuses(statuses, true);
                self.announce_triggers(true);
            }
            return;
        }
        if !(self.config.commands && topic == self.topics.command) {
            return;
        }
        let command = match control::parse(payload) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "rejected an MQTT command");
                let answer = serde_json::json!({ "ok": false, "error": error });
                self.publish(&self.topics.command_result, false, answer.to_string());
                return;
            }
        };
        tracing::info!(command = command.name(), "MQTT command received");
        let (reply_tx, reply_rx) = oneshot::channel();
        let (id, name) = (command.id().map(str::to_owned), command.name());
        let (client, result_topic, requests) = (self.client.clone(), self.topics.command_result.clone(), self.commands.clone());
        // The supervisor answers on its own thread; wait for it off the event loop.
        tokio::spawn(async move {
            let answer = match requests.try_send(Request { command, reply: reply_tx }) {
                Err(_) => Err("the daemon is busy or stopping; try again".to_owned()),
                Ok(()) => reply_rx.await.unwrap_or_else(|_| Err("the daemon stopped before answering".into())),
            };
            let payload = match answer {
                Ok(message) => serde_json::json!({ "id": id, "command": name, "ok": true, "message": message }),
                Err(error) => serde_json::json!({ "id": id, "command": name, "ok": false, "error": error }),
            };
            if let Err(e) = client.publish(result_topic, QoS::AtLeastOnce, false, payload.to_string()).await {
                tracing::warn!(error = %e, "cannot publish a command result");
            }
        });
    }

    async fn run(mut self, mut shutdown: Shutdown) {
        let mut statuses = self.reporter.states.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(self.config.stats_interval_s));
        // Short cap: operators expect status back within seconds of the broker's return.
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(3));
        let mut connected = false;
        loop {
            tokio::select! {
                event = self.events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(event = "mqtt_connected", host = %self.config.host, port = self.config.port, tls = self.config.tls, "MQTT connected");
                        connected = true;
                        backoff.reset();
                        let current = statuses.borrow_and_update().clone();
                        self.on_connected(&current);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let current = statuses.borrow().clone();
                        self.on_message(&p.topic, &p.payload, &current);
                    }
                    // The client sent something: it has room again for what we held.
                    Ok(Event::Outgoing(_)) => if connected && self.held.is_some() { self.drain_messages() },
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                        } else {
                            tracing::debug!(error = %e, "MQTT broker unreachable; retrying");
                        }
                        connected = false;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                                        _ = shutdown.recv_stopped() => break,
                        }
                    }
                },
                _ = tick.tick() => if connected { self.publish_stats() },
                Some(message) = next_message(&mut self.messages), if connected && self.held.is_none() => {
                    if self.publish_message(message) {
                        self.drain_messages();
                    }
                }
                Ok(()) = triggers_changed(&mut self.triggers) => if connected { self.announce_triggers(false) },
                Ok(()) = statuses.changed() => {
                    let current = statuses.borrow_and_update().clone();
                    if connected {
                        self.publish_statuses(&current, false);
                    }
                }
                _ = shutdown.recv_stopped() => break,
            }
        }
        if !connected {
            self.reporter.log();
            return;
        }
        self.goodbye().await;
    }

    /// Final stats, every camera offline, availability offline, then DISCONNECT; the event loop
    /// keeps running until the DISCONNECT has gone out.
    async fn goodbye(mut self) {
        self.flush_messages().await;
        self.publish_stats();
        for name in self.reporter.states.current().keys() {
            self.publish(&self.topics.camera(name), true, "offline");
        }
        self.publish(&self.topics.availability, true, "offline");
        if let Err(e) = self.client.try_disconnect() {
            tracing::warn!(error = %e, "cannot queue the MQTT disconnect");
        }
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.events.poll().await {
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
}

async fn next_message(messages: &mut Option<events::Receiver>) -> Option<Message> {
    match messages {
        Some(messages) => messages.recv().await,
        None => std::future::pending().await,
    }
}

async fn triggers_changed(triggers: &mut Option<watch::Receiver<Vec<TriggerEntity>>>) -> Result<(), watch::error::RecvError> {
    match triggers {
        Some(triggers) => triggers.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::MqttConfig;

    fn mqtt(toml_text: &str) -> MqttConfig {
        toml::from_str(toml_text).expect("an [mqtt] section")
    }

    #[test]
    fn a_password_without_tls_to_another_machine_is_warned_about_and_nothing_else_is() {
        let login = "username = \"glimpse\"\npassword_file = \"/etc/glimpse/mqtt-password\"\n";
        let warning = mqtt(&format!("host = \"broker.lan\"\n{login}")).cleartext_password_warning().expect("a warning");
        assert!(warning.contains("broker.lan:1883") && warning.contains("mqtt.tls"), "{warning}");
        for quiet in [
            format!("host = \"127.0.0.1\"\n{login}"),
            format!("host = \"::1\"\n{login}"),
            format!("host = \"localhost\"\n{login}"),
            format!("host = \"broker.lan\"\ntls = true\nca_file = \"/ca.pem\"\n{login}"),
            "host = \"broker.lan\"\n".to_owned(),
        ] {
            assert_eq!(mqtt(&quiet).cleartext_password_warning(), None, "{quiet}");
        }
    }
}
