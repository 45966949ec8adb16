//! Home Assistant MQTT discovery: one device per Glimpse box, with sensors for each camera's
//! status, frame rate and detections per minute, the outbox backlog and the time since the last
//! sync, all tied to the box's availability topic. Published retained; an empty retained payload
//! removes a sensor (for cameras removed by a reload).

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
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::Discovery;

    #[test]
    fn camera_sensors_share_one_device_and_its_availability() {
        let d = Discovery { ha_prefix: "homeassistant", topic_prefix: "glimpse", device: "lab-01" };
        let sensors = d.camera_sensors("street");
        assert_eq!(sensors.len(), 3);
        assert_eq!(sensors[0].0, "homeassistant/sensor/glimpse_lab-01_street_status/config");
        for (_, config) in sensors.iter().chain(d.device_sensors().iter()) {
            assert_eq!(config["availability_topic"], "glimpse/lab-01/availability");
            assert_eq!(config["device"]["identifiers"][0], "glimpse_lab-01");
        }
        assert_eq!(sensors[1].1["value_template"], "{{ value_json.cameras['street'].fps_out }}");
    }
}
