//! Boards without a real-time clock step their wall clock at boot, often backwards. Nothing the
//! daemon decides may follow the step, and no record id may be used twice because of it.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::daemon::{exported_ids, Daemon};
use crate::harness::ConfigBuilder;

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test-hooks feature (scripts/test.sh turns it on)")]
fn live_record_ids_stay_unique_when_the_clock_steps_back_while_running_and_across_a_restart() {
    let config = ConfigBuilder::new("clock", "detr-tiny-fixture.onnx").camera("live", "test:", 5.0).write();
    let offset = config.dir.path().join("clock-offset-ms");
    std::fs::write(&offset, "0").expect("offset");
    let env = [("GLIMPSE_TEST_CLOCK_OFFSET_FILE", offset.to_str().expect("utf-8 path"))];
    let run = |steps: &[&str]| {
        let mut daemon = Daemon::start(&config, &[], &env);
        for (i, step) in steps.iter().enumerate() {
            daemon.wait_for("frame_analysed", &[("camera", "live")], 5 * (i + 1), Duration::from_secs(60));
            std::fs::write(&offset, step).expect("step the clock");
        }
        daemon.wait_for("frame_analysed", &[("camera", "live")], 5 * (steps.len() + 1), Duration::from_secs(60));
        daemon.signal(Signal::SIGTERM);
        assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    };
    // While running: NTP steps the clock back by an hour, then by a day.
    run(&["-3600000", "-86400000"]);
    // A reboot into the past (no RTC): the clock starts a week behind.
    std::fs::write(&offset, "-604800000").expect("offset");
    run(&[]);
    let ids = exported_ids(&config);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert!(ids.len() >= 20, "too few records to prove anything: {}", ids.len());
    assert_eq!(unique.len(), ids.len(), "an id was used twice");
}
