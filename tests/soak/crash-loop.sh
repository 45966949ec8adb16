#!/usr/bin/env bash
# Soak: the crash-loop durability test with 500 SIGKILL cycles (the suite runs 20).
# Takes about 25 minutes on 2 cores. Usage: tests/soak/crash-loop.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/../.."
GLIMPSE_CRASH_CYCLES="${1:-500}" cargo test --locked --test e2e \
  durability::every_record_accepted_before_a_sigkill_reaches_the_index_after_restart -- --nocapture
