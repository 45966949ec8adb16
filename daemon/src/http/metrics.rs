//! `GET /metrics`: the stats JSON (what MQTT publishes) in Prometheus' text format, named from
//! the same tables ([`crate::stats::SECTIONS`]): `glimpse_{section}_{field}`, numbers that only
//! count up as counters (`_total`), the others and the derived numbers as gauges, booleans as
//! 0 or 1, a camera's or trigger's name as the label `camera` or `trigger`. Text fields are left
//! out but for a camera's status (`glimpse_camera_online`) and the engine (`glimpse_info`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::stats::{GAUGES, SECTIONS};

/// One metric family: its type, help and samples (labels, value).
struct Family {
    kind: &'static str,
    help: String,
    samples: Vec<(String, f64)>,
}

#[derive(Default)]
struct Families(BTreeMap<String, Family>);

impl Families {
    fn add(&mut self, name: String, kind: &'static str, help: &str, labels: String, value: f64) {
        let family = self.0.entry(name).or_insert_with(|| Family { kind, help: help.replace('`', ""), samples: Vec::new() });
        family.samples.push((labels, value));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.0 {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {}", f.help.replace('\\', "\\\\").replace('\n', " "), f.kind);
            for (labels, value) in &f.samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

/// `{name="value"}`, escaped as the text format says; empty without a label.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// The stats JSON as Prometheus' text format.
pub fn render(stats: &Value) -> String {
    let mut families = Families::default();
    let empty = Map::new();
    let object = |key: &str| stats.get(key).and_then(Value::as_object).unwrap_or(&empty);
    let (device, engine) = (stats["device"].as_str().unwrap_or_default(), stats["inference"]["engine"].as_str().unwrap_or_default());
    families.add(
        "glimpse_info".into(),
        "gauge",
        "the device and its inference engine",
        labels(&[("device", device), ("engine", engine)]),
        1.0,
    );
    families.add(
        "glimpse_uptime_seconds".into(),
        "gauge",
        "seconds since the daemon started",
        String::new(),
        number(&stats["uptime_s"]).unwrap_or(0.0),
    );
    let process = object("process");
    if let Some(cpu) = process.get("cpu_s").and_then(number) {
        families.add("glimpse_process_cpu_seconds_total".into(), "counter", "user and system CPU seconds", String::new(), cpu);
    }
    if let Some(rss) = process.get("rss_bytes").and_then(number) {
        families.add("glimpse_process_resident_memory_bytes".into(), "gauge", "resident memory, bytes", String::new(), rss);
    }
    for &(section, numbers, derived) in SECTIONS {
        match section.split_once(".{name}") {
            Some((plural, _)) => {
                let label = plural.trim_end_matches('s');
                for (name, fields) in object(plural) {
                    let fields = fields.as_object().unwrap_or(&empty);
                    add_section(&mut families, (section, label), (numbers, derived), fields, &labels(&[(label, name)]));
                    if let Some(status) = fields.get("status").and_then(Value::as_str) {
                        let online = if status == "online" { 1.0 } else { 0.0 };
                        families.add(
                            "glimpse_camera_online".into(),
                            "gauge",
                            "1 while the camera is online",
                            labels(&[(label, name)]),
                            online,
                        );
                    }
                }
            }
            None => add_section(&mut families, (section, section), (numbers, derived), object(section), ""),
        }
    }
    families.render()
}

/// One section's numbers: `names` is its key in [`SECTIONS`] and in metric names.
fn add_section(
    families: &mut Families,
    names: (&str, &str),
    fields: (crate::stats::Fields, crate::stats::Fields),
    values: &Map<String, Value>,
    labels: &str,
) {
    let ((section, prefix), (numbers, derived)) = (names, fields);
    for &(key, help) in numbers {
        let Some(value) = values.get(key).and_then(number) else { continue };
        match GAUGES.contains(&(section, key)) {
            true => families.add(format!("glimpse_{prefix}_{key}"), "gauge", help, labels.to_owned(), value),
            false => families.add(format!("glimpse_{prefix}_{key}_total"), "counter", help, labels.to_owned(), value),
        }
    }
    for &(key, help) in derived {
        if let Some(value) = values.get(key).and_then(number) {
            families.add(format!("glimpse_{prefix}_{key}"), "gauge", help, labels.to_owned(), value);
        }
    }
}

/// A number, or a boolean as 0 or 1; nothing for text and null.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_labels_follow_the_stats_tables() {
        let stats = serde_json::json!({
            "device": "gate-01", "uptime_s": 12, "process": { "cpu_s": 3.5, "rss_bytes": 1000 },
            "inference": { "engine": "tract", "detector_plans": 2 },
            "cameras": { "street \"north\"": { "frames_decoded": 10, "lag_ms": 40, "fps_in": 1.5, "status": "online", "reason": null } },
            "outbox": { "pending": 3, "accepted": 7, "paused": false },
            "triggers": { "van": { "matches": 1, "last_match": null } },
        });
        let text = render(&stats);
        for line in [
            "# TYPE glimpse_camera_frames_decoded_total counter",
            "glimpse_camera_frames_decoded_total{camera=\"street \\\"north\\\"\"} 10",
            "# TYPE glimpse_camera_lag_ms gauge",
            "glimpse_camera_fps_in{camera=\"street \\\"north\\\"\"} 1.5",
            "glimpse_camera_online{camera=\"street \\\"north\\\"\"} 1",
            "glimpse_outbox_pending 3",
            "glimpse_outbox_accepted_total 7",
            "glimpse_outbox_paused 0",
            "glimpse_trigger_matches_total{trigger=\"van\"} 1",
            "glimpse_info{device=\"gate-01\",engine=\"tract\"} 1",
            "glimpse_process_cpu_seconds_total 3.5",
            "glimpse_inference_detector_plans 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("reason") && !text.contains("last_match"), "text and null fields are left out:\n{text}");
    }

    #[test]
    fn every_gauge_names_a_number_of_its_section() {
        for (section, key) in GAUGES {
            let numbers = SECTIONS.iter().find(|(s, _, _)| s == section).map(|(_, n, _)| *n).unwrap_or_default();
            assert!(numbers.iter().any(|(k, _)| k == key), "{section}.{key} is not a number of the stats tables");
        }
    }
}
