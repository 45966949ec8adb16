//! Telling the broker what the cameras see: object events (`new`, `update`, `end` per tracked
//! object) and semantic triggers, through a real mosquitto broker, on the test clip.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::daemon::{clip, exported_ids, glimpse, wait_until, Daemon};
use crate::harness::mosquitto::Mosquitto;
use crate::harness::mqtt::{Message, Observer};
use crate::harness::ConfigBuilder;

fn json(message: &Message) -> Value {
    serde_json::from_str(&message.payload).unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", message.topic, message.payload))
}

/// Each track's event types, in the order they were published.
fn lifecycles(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut tracks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        let key = format!("{}/{}", e["camera"].as_str().expect("camera"), e["track_id"].as_str().expect("track_id"));
        tracks.entry(key).or_default().push(e["type"].as_str().expect("type").to_owned());
    }
    tracks
}

fn assert_one_new_then_one_end(tracks: &BTreeMap<String, Vec<String>>) {
    assert!(!tracks.is_empty(), "no events");
    for (track, kinds) in tracks {
        assert_eq!(kinds.first().map(String::as_str), Some("new"), "{track}: {kinds:?}");
        assert_eq!(kinds.last().map(String::as_str), Some("end"), "{track}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| *k == "new").count(), 1, "{track}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| *k == "end").count(), 1, "{track}: {kinds:?}");
    }
}

#[test]
fn every_tracked_object_of_a_file_has_one_new_and_one_end_naming_records_that_exist() {
    let broker = Mosquitto::start();
    let observer = Observer::subscribe(broker.port, "glimpse/events-file/events");
    let stats = Observer::subscribe(broker.port, "glimpse/events-file/stats");
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), crate::http::TOKEN).expect("write the token");
    let http = format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\npublic_url = \"http://gate.example:8080/\"\n",
        crate::harness::free_port(),
        token.path().display()
    );
    let config = ConfigBuilder::new("events-file", "detr-tiny-fixture.onnx")
        .camera("street", &bikes, 1.0)
        .mqtt(broker.port, 1.0)
        .raw(&http)
        .raw("[events]\nupdate_interval_s = 3")
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let ids: BTreeSet<String> = exported_ids(&config).into_iter().collect();
    assert_eq!(ids.len(), 50, "10 frames, 5 objects each");
    wait_until("every track's end", Duration::from_secs(10), || {
        let events: Vec<Value> = observer.messages().iter().map(json).collect();
        events.iter().filter(|e| e["type"] == "end").count() >= 5
    });
    let events: Vec<Value> = observer.messages().iter().map(json).collect();
    let tracks = lifecycles(&events);
    assert_eq!(tracks.len(), 5, "{tracks:#?}");
    assert_one_new_then_one_end(&tracks);
    assert!(tracks.values().all(|kinds| kinds.contains(&"update".to_owned())), "re-embedded every frame: updates, {tracks:#?}");
    for e in &events {
        let record = e["record_id"].as_str().expect("every event of an embedded track names its record");
        assert!(ids.contains(record), "{record} is not in the outbox");
        assert_eq!(e["record_url"], format!("http://gate.example:8080/records/{record}"), "the record's page, with [http] public_url");
        assert!(e["crop"].as_str().is_some_and(|c| c.starts_with("events-file/street/")), "{e}");
        assert!(e["top_score"].as_f64() >= e["score"].as_f64(), "{e}");
        assert_eq!((e["frame_w"].as_u64().is_some(), e["box"].as_array().map(Vec::len)), (true, Some(4)), "{e}");
        assert_eq!(e["end_ts"].is_null(), e["type"] != "end", "{e}");
    }
    let updates: Vec<&Value> = events.iter().filter(|e| e["type"] == "update").collect();
    for track in tracks.keys() {
        let times: Vec<i64> = updates
            .iter()
            .filter(|e| track.ends_with(e["track_id"].as_str().unwrap_or_default()))
            .map(|e| e["start_ts"].as_i64().unwrap_or(0))
            .collect();
        assert!(times.len() <= 4, "at most one update per 3 s over a 10 s clip: {track} {times:?}");
    }
    let last_stats = stats.on("glimpse/events-file/stats").last().map(json).expect("the final stats");
    let pictures = tracks.len(); // each new track's first crop
    assert_eq!(last_stats["events"], serde_json::json!({ "published": events.len() + pictures, "dropped": 0 }), "{last_stats}");

    // The retained snapshots outlive the daemon: what a notification or Home Assistant shows.
    for topic in ["glimpse/events-file/street/person/snapshot", "glimpse/events-file/cameras/street/snapshot"] {
        let later = Observer::subscribe(broker.port, topic);
        let snapshot = later.wait_for(topic, Duration::from_secs(10), |m| m.retain);
        let crop = image::load_from_memory(&snapshot.bytes).unwrap_or_else(|e| panic!("{topic} is not a JPEG: {e}"));
        assert!(crop.width() > 0 && crop.height() > 0, "{topic}");
    }
}

#[test]
fn sigterm_ends_every_open_track_before_the_device_says_offline() {
    let broker = Mosquitto::start();
    let observer = Observer::subscribe(broker.port, "glimpse/events-stop/#");
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("events-stop", "detr-tiny-fixture.onnx")
        .raw(&format!("[[cameras]]\nname = \"live\"\nuri = \"{bikes}\"\nsample_fps = 2\nloop = true\n"))
        .mqtt(broker.port, 1.0)
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    observer.wait_for("glimpse/events-stop/events", Duration::from_secs(60), |m| json(m)["type"] == "new");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    wait_until("offline", Duration::from_secs(10), || {
        observer.on("glimpse/events-stop/availability").iter().any(|m| m.payload == "offline")
    });
    let all = observer.messages();
    let offline_at = all.iter().rposition(|m| m.topic.ends_with("/availability") && m.payload == "offline").expect("offline");
    let events: Vec<Value> = all[..offline_at].iter().filter(|m| m.topic.ends_with("/events")).map(json).collect();
    assert_one_new_then_one_end(&lifecycles(&events));
    assert!(all[offline_at..].iter().all(|m| !m.topic.ends_with("/events")), "no event after offline");
}

#[test]
fn while_the_broker_is_away_events_wait_up_to_the_bound_and_the_rest_are_counted_as_dropped() {
    let port = crate::harness::free_port();
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("events-away", "detr-tiny-fixture.onnx")
        .camera("street", &bikes, 2.0)
        .mqtt(port, 1.0)
        .raw("[events]\nupdate_interval_s = 0\nmax_queued = 20")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for("events_dropped", &[], 1, Duration::from_secs(120));
    // The whole file (20 frames at 2 fps) is analysed while the broker is away.
    daemon.wait_for("frame_analysed", &[("camera", "street")], 20, Duration::from_secs(120));
    let broker = Mosquitto::start_on(port);
    let observer = Observer::subscribe(broker.port, "glimpse/events-away/#");
    let events = |m: &Message| json(m)["events"].clone();
    let back = observer.wait_for("glimpse/events-away/stats", Duration::from_secs(60), |m| events(m)["published"].as_u64() >= Some(20));
    // The 20 queued events, and the 5 ends if the camera's end of file reached inference only
    // after the broker was back (else they were dropped with the rest).
    let published_then = events(&back)["published"].as_u64().unwrap_or(0);
    assert!(published_then == 20 || published_then == 25, "the queued events reach the broker once it is back: {}", events(&back));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    let last = observer.on("glimpse/events-away/stats").last().map(events).expect("final stats");
    let (published, dropped) = (last["published"].as_u64().unwrap_or(0), last["dropped"].as_u64().unwrap_or(0));
    // Each record is a new or an update (re-embedded every frame, no rate limit), and 5 ends;
    // each of the 5 news also sends its crop to the snapshot topics.
    let records = exported_ids(&config).len() as u64;
    assert_eq!(
        (published, published + dropped),
        (published_then, records + 5 + 5),
        "every message is published or counted as dropped: {last}"
    );
}

/// A crop the first run kept, of an object in the clip.
fn a_crop_of_the_clip(config: &crate::harness::TestConfig) -> std::path::PathBuf {
    let crops = config.dir.path().join("data/crops");
    let mut found = Vec::new();
    let mut dirs = vec![crops];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("crop dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "jpg") {
                found.push(path);
            }
        }
    }
    found.sort();
    found.into_iter().next().expect("a crop")
}

fn trigger(name: &str, source: &str, threshold: f64, cooldown_s: f64) -> String {
    format!("[[triggers]]\nname = \"{name}\"\n{source}\nthreshold = {threshold}\ncooldown_s = {cooldown_s}\n")
}

#[test]
fn a_picture_of_an_object_in_the_clip_fires_on_it_once_per_track_and_an_unrelated_photo_does_not() {
    let broker = Mosquitto::start();
    let observer = Observer::subscribe(broker.port, "glimpse/triggers-file/#");
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let first = ConfigBuilder::new("triggers-file", "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).write();
    let mut daemon = Daemon::start(&first, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let crop = a_crop_of_the_clip(&first);
    let photo = clip("photos/astronaut.png");
    let config = ConfigBuilder::new("triggers-file", "detr-tiny-fixture.onnx")
        .camera("street", &bikes, 1.0)
        .mqtt(broker.port, 1.0)
        .raw(&trigger("seen", &format!("image = \"{}\"", crop.display()), 0.99, 0.0))
        .raw(&trigger("unrelated", &format!("image = \"{}\"", photo.display()), 0.99, 0.0))
        .raw(&trigger("anything-once", "text = \"a bicycle\"", -0.99, 3600.0))
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    wait_until("matches", Duration::from_secs(10), || !observer.on("glimpse/triggers-file/triggers/seen").is_empty());
    let seen: Vec<Value> = observer.on("glimpse/triggers-file/triggers/seen").iter().map(json).collect();
    let tracks: BTreeSet<&str> = seen.iter().map(|m| m["track_id"].as_str().expect("track")).collect();
    assert_eq!(tracks.len(), seen.len(), "one match per track: {seen:#?}");
    assert!(seen.iter().all(|m| m["similarity"].as_f64() >= Some(0.99) && m["camera"] == "street"), "{seen:#?}");
    assert!(observer.on("glimpse/triggers-file/triggers/unrelated").is_empty(), "an unrelated photo must not fire");
    assert_eq!(observer.on("glimpse/triggers-file/triggers/anything-once").len(), 1, "cooldown: once per camera per hour");
    let stats = observer.on("glimpse/triggers-file/stats").last().map(json).expect("the final stats");
    assert_eq!(stats["triggers"]["seen"]["matches"].as_u64(), Some(seen.len() as u64), "{stats}");
    assert_eq!(stats["triggers"]["unrelated"]["matches"], 0, "{stats}");
}

#[test]
fn a_reload_adds_and_removes_triggers_without_restarting_cameras_and_discovery_follows() {
    let broker = Mosquitto::start();
    let observer = Observer::subscribe(broker.port, "#");
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let builder = |triggers: &str| {
        ConfigBuilder::new("triggers-reload", "detr-tiny-fixture.onnx")
            .raw(&format!("[[cameras]]\nname = \"live\"\nuri = \"{bikes}\"\nsample_fps = 2\nloop = true\n"))
            .mqtt(broker.port, 1.0)
            .raw("ha_discovery = true\ncommands = true")
            .raw(triggers)
    };
    let (first_trigger, second_trigger) =
        (trigger("first", "text = \"a car\"", 0.999, 0.0), trigger("second", "text = \"anything\"", -0.99, 5.0));
    let config = builder(&first_trigger).write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    let first = "homeassistant/event/glimpse_triggers-reload_trigger_first/config";
    let first_sensor = "homeassistant/binary_sensor/glimpse_triggers-reload_trigger_first_active/config";
    observer.wait_for(first, Duration::from_secs(60), |m| !m.payload.is_empty());
    observer.wait_for(first_sensor, Duration::from_secs(10), |m| json(m)["off_delay"] == 1);

    let text = std::fs::read_to_string(&config.path).expect("config").replace(&first_trigger, &second_trigger);
    std::fs::write(&config.path, text).expect("rewrite the config");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for("config_reloaded", &[], 1, Duration::from_secs(30));
    let reloaded = daemon.last("config_reloaded").expect("reloaded");
    let summary = reloaded["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("triggers: 1 added (second), 1 removed (first)"), "{reloaded}");
    assert!(summary.contains("0 restarted with new settings, 1 untouched"), "the camera keeps running: {reloaded}");
    observer.wait_for(first, Duration::from_secs(10), |m| m.payload.is_empty());
    observer.wait_for(first_sensor, Duration::from_secs(10), |m| m.payload.is_empty());
    observer.wait_for("homeassistant/binary_sensor/glimpse_triggers-reload_trigger_second_active/config", Duration::from_secs(10), |m| {
        json(m)["off_delay"] == 5
    });
    let matched = observer.wait_for("glimpse/triggers-reload/triggers/second", Duration::from_secs(60), |_| true);
    assert_eq!(json(&matched)["camera"], "live");
    let picture = observer.wait_for("glimpse/triggers-reload/triggers/second/snapshot", Duration::from_secs(30), |_| true);
    image::load_from_memory(&picture.bytes).expect("the last match's crop, as a JPEG");
    let image_entity = "homeassistant/image/glimpse_triggers-reload_trigger_second_match/config";
    let image_entity = observer.wait_for(image_entity, Duration::from_secs(10), |m| !m.payload.is_empty());
    assert_eq!(json(&image_entity)["image_topic"], "glimpse/triggers-reload/triggers/second/snapshot");

    observer.publish("glimpse/triggers-reload/cmd", r#"{"command": "triggers", "id": "t"}"#);
    let answer = observer.wait_for("glimpse/triggers-reload/cmd/result", Duration::from_secs(10), |m| json(m)["id"] == "t");
    let list = json(&answer)["message"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "second");
    assert!(list[0]["matches"].as_u64() >= Some(1), "{list}");
    assert_eq!(list[0]["last_match"]["trigger"], "second", "{list}");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
}

#[test]
fn glimpse_check_names_each_unusable_trigger_with_its_position() {
    let broker = Mosquitto::start();
    let config = ConfigBuilder::new("triggers-check", "detr-tiny-fixture.onnx")
        .camera("street", "test:", 1.0)
        .mqtt(broker.port, 1.0)
        .raw(&trigger("pic", "image = \"/nonexistent/van.jpg\"", 0.9, 60.0))
        .raw(&trigger("old", "record = \"no-such-record\"", 0.9, 60.0))
        .write();
    let out = glimpse(&["check", "--config", &config.display().to_string()], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    let text = std::fs::read_to_string(&config.path).expect("config");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).expect("line") + 1;
    let (image_line, record_line) = (line_of("/nonexistent/van.jpg"), line_of("no-such-record"));
    assert!(
        said.contains(&format!("glimpse.toml:{image_line}:9: triggers[0].image: cannot read the image /nonexistent/van.jpg")),
        "{said}"
    );
    assert!(said.contains(&format!("glimpse.toml:{record_line}:10: triggers[1].record: no record \"no-such-record\"")), "{said}");
}
