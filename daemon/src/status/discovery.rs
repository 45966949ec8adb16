//! Home Assistant MQTT discovery: one device per Glimpse box, with sensors for each camera's
//! status, frame rate and detections per minute, a `camera` entity showing its latest object, the outbox backlog and the time since the last
//! sync, all tied to the box's availability topic; and for each semantic trigger an `event`
//! entity (each match), a `binary_sensor` that is on from a match until its cooldown ends and
//! an `image` of its last match.
//! Published retained; an empty retained payload removes an entity (for cameras and triggers
//! removed by a reload).

use serde_json::{json, Value};

pub struct Discovery<'a> {
    pub ha_prefix: &'a str,
    pub topic_prefix: &'a str,
    pub device: &'a str,
}

impl Discovery<'_> {
    fn device_block(&self) -> Value {
        json!({
            "identifiers": [format!("glimpse_{}", self.device)],
            "name": format!("Glimpse {}", self.device),
            "manufacturer": "Glimpse",
            "model": "edge camera indexer",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn sensor(&self, object: &str, name: &str, state_topic: String, template: Option<String>, unit: Option<&str>) -> (String, Value) {
        let id = format!("glimpse_{}_{object}", self.device);
        let mut config = json!({
            "name": name,
            "unique_id": id,
            "object_id": id,
            "state_topic": state_topic,
            "availability_topic": format!("{}/{}/availability", self.topic_prefix, self.device),
            "device": self.device_block(),
        });
        if let Some(t) = template {
            config["value_template"] = json!(t);
        }
        if let Some(u) = unit {
            config["unit_of_measurement"] = json!(u);
            config["state_class"] = json!("measurement");
        }
        (format!("{}/sensor/{id}/config", self.ha_prefix), config)
    }

    /// A `problem` binary sensor read from the stats.
    fn binary_sensor(&self, object: &str, name: &str, template: &str) -> (String, Value) {
        let (_, mut config) = self.sensor(object, name, self.stats_topic(), Some(template.into()), None);
        config["device_class"] = json!("problem");
        let id = format!("glimpse_{}_{object}", self.device);
        (format!("{}/binary_sensor/{id}/config", self.ha_prefix), config)
    }

    fn stats_topic(&self) -> String {
        format!("{}/{}/stats", self.topic_prefix, self.device)
    }

    /// (topic, retained payload) for the device-wide sensors.
    pub fn device_sensors(&self) -> Vec<(String, Value)> {
        vec![
            self.sensor(
                "outbox_pending",
                "Outbox backlog",
                self.stats_topic(),
                Some("{{ value_json.outbox.pending }}".into()),
                Some("records"),
            ),
            self.sensor(
                "crops_pending",
                "Crop upload backlog",
                self.stats_topic(),
                Some("{{ value_json.crops.pending }}".into()),
                Some("crops"),
            ),
            self.binary_sensor("disk_full", "Data disk full", "{{ 'ON' if value_json.outbox.disk_full else 'OFF' }}"),
            self.sensor(
                "last_sync_age",
                "Since last sync",
                self.stats_topic(),
                Some("{{ value_json.sync.last_sync_age_s }}".into()),
                Some("s"),
            ),
        ]
    }

    /// (topic, retained payload) for one camera's sensors.
    pub fn camera_sensors(&self, camera: &str) -> Vec<(String, Value)> {
        let field = |f: &str| format!("{{{{ value_json.cameras['{camera}'].{f} }}}}");
        vec![
            self.sensor(
                &format!("{camera}_status"),
                &format!("{camera} status"),
                format!("{}/{}/cameras/{camera}/status", self.topic_prefix, self.device),
                None,
                None,
            ),
            self.sensor(
                &format!("{camera}_fps"),
                &format!("{camera} frames per second"),
                self.stats_topic(),
                Some(field("fps_out")),
                Some("fps"),
            ),
            self.sensor(
                &format!("{camera}_detections"),
                &format!("{camera} detections per minute"),
                self.stats_topic(),
                Some(field("detections_per_min")),
                Some("detections/min"),
            ),
            self.snapshot_camera(camera),
        ]
    }

    /// A `camera` entity showing the crop of the camera's latest new track.
    fn snapshot_camera(&self, camera: &str) -> (String, Value) {
        let id = format!("glimpse_{}_{camera}_snapshot", self.device);
        let config = json!({
            "name": format!("{camera} latest object"),
            "unique_id": id,
            "object_id": id,
            "topic": format!("{}/{}/cameras/{camera}/snapshot", self.topic_prefix, self.device),
            "availability_topic": format!("{}/{}/availability", self.topic_prefix, self.device),
            "device": self.device_block(),
        });
        (format!("{}/camera/{id}/config", self.ha_prefix), config)
    }
}

impl Discovery<'_> {
    /// (topic, retained payload) for one trigger's `event` entity and `binary_sensor`.
    pub fn trigger_entities(&self, trigger: &str, cooldown_s: f64) -> Vec<(String, Value)> {
        let id = format!("glimpse_{}_trigger_{trigger}", self.device);
        let common = |name: String, unique: &str| {
            json!({
                "name": name,
                "unique_id": unique,
                "object_id": unique,
                "state_topic": format!("{}/{}/triggers/{trigger}", self.topic_prefix, self.device),
                "availability_topic": format!("{}/{}/availability", self.topic_prefix, self.device),
                "device": self.device_block(),
            })
        };
        let mut event = common(format!("Trigger {trigger}"), &id);
        event["event_types"] = json!(["match"]);
        event["value_template"] = json!(
            "{{ {'event_type': 'match', 'camera': value_json.camera, 'label': value_json.label, 'similarity': value_json.similarity, 'record_id': value_json.record_id, 'crop': value_json.crop} | to_json }}"
        );
        let active_id = format!("{id}_active");
        let mut active = common(format!("{trigger} seen"), &active_id);
        active["value_template"] = json!("ON");
        // Home Assistant turns it off by itself, as the trigger's cooldown ends.
        active["off_delay"] = json!(cooldown_s.ceil().max(1.0) as u64);
        let image_id = format!("{id}_match");
        let image = json!({
            "name": format!("{trigger} last match"),
            "unique_id": image_id,
            "object_id": image_id,
            "image_topic": format!("{}/{}/triggers/{trigger}/snapshot", self.topic_prefix, self.device),
            "content_type": "image/jpeg",
            "availability_topic": format!("{}/{}/availability", self.topic_prefix, self.device),
            "device": self.device_block(),
        });
        vec![
            (format!("{}/event/{id}/config", self.ha_prefix), event),
            (format!("{}/binary_sensor/{active_id}/config", self.ha_prefix), active),
            (format!("{}/image/{image_id}/config", self.ha_prefix), image),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::Discovery;

    #[test]
    fn a_trigger_is_an_event_entity_a_binary_sensor_that_turns_off_after_its_cooldown_and_an_image() {
        let d = Discovery { ha_prefix: "homeassistant", topic_prefix: "glimpse", device: "lab-01" };
        let entities = d.trigger_entities("red-van", 60.0);
        assert_eq!(entities[0].0, "homeassistant/event/glimpse_lab-01_trigger_red-van/config");
        assert_eq!(entities[0].1["event_types"][0], "match");
        assert_eq!(entities[1].0, "homeassistant/binary_sensor/glimpse_lab-01_trigger_red-van_active/config");
        assert_eq!(entities[1].1["off_delay"], 60);
        assert_eq!(entities[2].0, "homeassistant/image/glimpse_lab-01_trigger_red-van_match/config");
        assert_eq!(entities[2].1["image_topic"], "glimpse/lab-01/triggers/red-van/snapshot", "its last match's crop");
        for (_, config) in &entities[..2] {
            assert_eq!(config["state_topic"], "glimpse/lab-01/triggers/red-van");
        }
        assert!(entities.iter().all(|(_, config)| config["availability_topic"] == "glimpse/lab-01/availability"));
    }

    #[test]
    fn camera_sensors_share_one_device_and_its_availability() {
        let d = Discovery { ha_prefix: "homeassistant", topic_prefix: "glimpse", device: "lab-01" };
        let sensors = d.camera_sensors("street");
        assert_eq!(sensors.len(), 4);
        assert_eq!(sensors[0].0, "homeassistant/sensor/glimpse_lab-01_street_status/config");
        for (_, config) in sensors.iter().chain(d.device_sensors().iter()) {
            assert_eq!(config["availability_topic"], "glimpse/lab-01/availability");
            assert_eq!(config["device"]["identifiers"][0], "glimpse_lab-01");
        }
        assert_eq!(sensors[1].1["value_template"], "{{ value_json.cameras['street'].fps_out }}");
        assert_eq!(sensors[3].0, "homeassistant/camera/glimpse_lab-01_street_snapshot/config", "the latest object, as a camera");
        assert_eq!(sensors[3].1["topic"], "glimpse/lab-01/cameras/street/snapshot");
    }
}
