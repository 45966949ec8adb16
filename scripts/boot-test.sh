#!/usr/bin/env bash
# The service under real systemd: an arm64 Debian 12 guest, booted in qemu-system-aarch64 (direct
# kernel boot, Debian's kernel, user-mode networking), runs glimpse.service as the Yocto layer
# installs it: the unit, the time-sync drop-in, the grow-data unit for a data partition, the
# configuration and the credentials. The host runs the Pinecone emulator and mosquitto on its
# loopback, which the guest reaches as 10.0.2.2. Checks, each waited for with a deadline:
#
#   1. Type=notify reaches active/running and systemctl shows the daemon's STATUS=;
#   2. the data partition grew to the end of the disk and is the service's StateDirectory;
#   3. the sandbox holds (ProtectSystem=strict: / is read-only to the daemon) and the Pinecone
#      key arrives as a credential (the emulator refuses any other key);
#   4. the file camera's records reach the emulator, and the broker hears the device (its id
#      derived from the machine id) come online;
#   5. the watchdog: with inference wedged (test-hooks build), systemd restarts the service.
#
# Then it reports boot-to-first-record against boot-to-multi-user.target, both from the same
# boot (docs/benchmarks.md). It takes about 45 minutes the first time (the aarch64 build, and the
# root file system made by mmdebstrap under qemu-user: about 35 minutes; both cached under
# target/), then about 10; it is not part of scripts/test.sh (CI's 30 minutes) and runs before
# every release.
#
#   scripts/boot-test.sh            (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
. scripts/deps.sh

work="$repo/target/boot-test"
run="$work/run"
mkdir -p "$work"
log() { printf '==> %s\n' "$*"; }
fail() {
  printf 'boot-test: FAIL: %s\n' "$*" >&2
  [ -f "$run/console.log" ] && { echo "--- guest console (last 40 lines)" >&2; tail -n 40 "$run/console.log" >&2; }
  exit 1
}

# --- host tools -----------------------------------------------------------------------------
APT_PACKAGES=(qemu-system-arm qemu-user-static binfmt-support mmdebstrap e2fsprogs fdisk openssh-client mosquitto mosquitto-clients curl)
install_apt_packages
# mmdebstrap runs the arm64 packages' scripts through binfmt_misc and qemu-aarch64.
[ -e /proc/sys/fs/binfmt_misc/register ] || as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || as_root update-binfmts --enable qemu-aarch64

# --- the aarch64 daemon and the host's test servers ------------------------------------------
log "aarch64 release build with test hooks"
scripts/aarch64.sh binary
binary="$repo/target/aarch64-unknown-linux-gnu/release/glimpse"
cargo build -q -p pinecone-emulator --locked
emulator_bin="$repo/target/debug/pinecone-emulator"

# --- the root file system (cached while the package list is unchanged) ------------------------
GUEST_PACKAGES="systemd-sysv,systemd-timesyncd,udev,linux-image-arm64,openssh-server,gstreamer1.0-plugins-base,gstreamer1.0-plugins-good,gstreamer1.0-libav,ca-certificates,glib-networking,fdisk,util-linux,e2fsprogs,iproute2,kmod"
base="$work/base-$(printf '%s' "$GUEST_PACKAGES" | sha256sum | cut -c1-12).tar"
if [ ! -s "$base" ]; then
  log "arm64 Debian 12 root file system with mmdebstrap (once)"
  as_root mmdebstrap --quiet --architectures=arm64 --variant=apt --include="$GUEST_PACKAGES" \
    bookworm "${base%.tar}.partial.tar" http://deb.debian.org/debian
  mv "${base%.tar}.partial.tar" "$base"
fi

log "installing Glimpse into the guest as the Yocto layer does"
as_root rm -rf "$run"
mkdir -p "$run/root"
as_root tar -C "$run/root" -xf "$base"
root="$run/root"
ssh-keygen -q -t ed25519 -N '' -f "$run/id_ed25519"
api_key="boot-test-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
install_guest() {
  # The daemon, its unit and drop-ins, the data-partition unit (glimpse_git.bb's do_install).
  install -m 0755 "$binary" "$root/usr/bin/glimpse"
  install -m 0644 systemd/glimpse.service "$root/usr/lib/systemd/system/glimpse.service"
  install -D -m 0644 systemd/systemd-time-wait-sync.service.d/glimpse.conf \
    "$root/usr/lib/systemd/system/systemd-time-wait-sync.service.d/glimpse.conf"
  install -m 0644 systemd/glimpse-grow-data.service "$root/usr/lib/systemd/system/glimpse-grow-data.service"
  install -D -m 0755 systemd/glimpse-grow-data "$root/usr/libexec/glimpse/glimpse-grow-data"
  install -d "$root/usr/share/glimpse/models" "$root/usr/share/glimpse/media"
  install -m 0644 models/tiny/detr-tiny-fixture.onnx models/tiny/clip-tiny-random.onnx "$root/usr/share/glimpse/models/"
  install -m 0644 tests/media/bikes.mp4 "$root/usr/share/glimpse/media/"
  # Configuration and credentials, owned and moded as the recipe installs them.
  install -d -m 0755 "$root/etc/glimpse"
  install -d -m 0700 "$root/etc/glimpse/credentials"
  printf '%s' "$api_key" >"$root/etc/glimpse/credentials/pinecone-api-key"
  : >"$root/etc/glimpse/credentials/mqtt-password"
  chmod 0600 "$root/etc/glimpse/credentials/"*
  cat >"$root/etc/glimpse/glimpse.toml" <<TOML
# device.id is left out: the daemon derives it from the machine id.
[device]
data_dir = "/var/lib/glimpse"

[[cameras]]
name = "bikes"
uri = "file:///usr/share/glimpse/media/bikes.mp4"
sample_fps = 1
loop = true

[detector]
model = "/usr/share/glimpse/models/detr-tiny-fixture.onnx"
shortest_edge = 256
longest_edge = 512

[embedder]
model = "/usr/share/glimpse/models/clip-tiny-random.onnx"

[analysis]
motion_gate = false
dedupe = false

[pinecone]
host = "http://127.0.0.1:$pinecone_port"
namespace = "boot"

[mqtt]
host = "10.0.2.2"
port = $mqtt_port
stats_interval_s = 5
TOML
  # The user (useradd in the recipe) and the enabled units (systemd.bbclass).
  chroot "$root" useradd --system --user-group --no-create-home --home-dir /var/lib/glimpse \
    --shell /usr/sbin/nologin --groups video glimpse
  chroot "$root" groupadd --system render 2>/dev/null || true
  chroot "$root" usermod -a -G render glimpse
  chroot "$root" chown root:glimpse /etc/glimpse/glimpse.toml
  chmod 0640 "$root/etc/glimpse/glimpse.toml"
  ln -sf /usr/lib/systemd/system/glimpse.service "$root/etc/systemd/system/multi-user.target.wants/glimpse.service"
  mkdir -p "$root/etc/systemd/system/var-lib-glimpse.mount.wants"
  ln -sf /usr/lib/systemd/system/glimpse-grow-data.service "$root/etc/systemd/system/var-lib-glimpse.mount.wants/"
  # The card image's fstab (wic/glimpse-sdimage-raspberrypi.wks) and the board's basics.
  printf 'LABEL=glimpse-data /var/lib/glimpse ext4 defaults,x-systemd.growfs 0 2\n' >"$root/etc/fstab"
  : >"$root/etc/machine-id"   # generated at first boot, as on a freshly flashed card
  echo glimpse-boot >"$root/etc/hostname"
  printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/20-wired.network"
  ln -sf /usr/lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/"
  # Plain http goes only to loopback (a key in clear elsewhere is refused): the guest's loopback
  # port is forwarded to the emulator on the host with systemd's own socket proxy.
  cat >"$root/etc/systemd/system/pinecone-emulator.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:$pinecone_port

[Install]
WantedBy=sockets.target
UNIT
  cat >"$root/etc/systemd/system/pinecone-emulator.service" <<UNIT
[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd 10.0.2.2:$pinecone_port
UNIT
  mkdir -p "$root/etc/systemd/system/sockets.target.wants"
  ln -sf /etc/systemd/system/pinecone-emulator.socket "$root/etc/systemd/system/sockets.target.wants/"
  install -d -m 0700 "$root/root/.ssh"
  install -m 0600 "$run/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pinecone_port="$(free_port)"
mqtt_port="$(free_port)"
ssh_port="$(free_port)"
as_root bash -c "$(declare -f install_guest); root='$root' binary='$binary' run='$run' api_key='$api_key' pinecone_port=$pinecone_port mqtt_port=$mqtt_port; set -eu; install_guest"

# --- the disk: GPT with the root file system and a small glimpse-data partition, then free space
log "disk image"
kernel="$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)"
initrd="$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)"
cp "$kernel" "$run/vmlinuz"
cp "$initrd" "$run/initrd.img"
root_mib=$(( $(as_root du -sm "$root" | cut -f1) * 13 / 10 + 256 ))
data_mib=64
free_mib=448
as_root mkfs.ext4 -q -L root -d "$root" "$run/root.img" "${root_mib}M"
mkfs.ext4 -q -L glimpse-data "$run/data.img" "${data_mib}M"
disk="$run/disk.img"
truncate -s $(( (1 + root_mib + data_mib + free_mib + 1) * 1024 * 1024 )) "$disk"
printf 'label: gpt\nstart=2048, size=%dMiB, type=linux\nsize=%dMiB, type=linux\n' "$root_mib" "$data_mib" | sfdisk -q "$disk"
dd if="$run/root.img" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$run/data.img" of="$disk" bs=1M seek=$(( 1 + root_mib )) conv=notrunc status=none
rm -f "$run/root.img" "$run/data.img"

# --- host services ----------------------------------------------------------------------------
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$emulator_bin" "$pinecone_port" "$api_key" 512 >"$run/emulator.log" 2>&1 &
pids+=($!)
printf 'listener %d 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" >"$run/mosquitto.conf"
mosquitto -c "$run/mosquitto.conf" >"$run/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (: >"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null && break; sleep 0.2; done
mosquitto_sub -p "$mqtt_port" -t 'glimpse/#' -v >"$run/mqtt.log" 2>&1 &
pids+=($!)

# --- boot -------------------------------------------------------------------------------------
log "booting (qemu-system-aarch64, software emulation)"
booted_at=$(date +%s.%N)
qemu-system-aarch64 -machine virt -cpu max -smp 2 -m 2048 -display none -no-reboot \
  -kernel "$run/vmlinuz" -initrd "$run/initrd.img" \
  -append "root=/dev/vda1 rw console=ttyAMA0 systemd.show_status=1" \
  -drive "file=$disk,format=raw,if=virtio" \
  -netdev "user,id=net,hostfwd=tcp:127.0.0.1:$ssh_port-:22" -device virtio-net-pci,netdev=net \
  -serial "file:$run/console.log" &
pids+=($!)
qemu_pid=$!

guest() { ssh -q -i "$run/id_ed25519" -p "$ssh_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o BatchMode=yes root@127.0.0.1 "$@"; }
# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND every 2 s until it succeeds.
wait_for() {
  local what="$1" limit="$2" start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "the guest stopped while waiting for: $what"
    [ $(( SECONDS - start )) -lt "$limit" ] || fail "no $what within ${limit}s"
    sleep 2
  done
  log "ok: $what ($(( SECONDS - start )) s)"
}
records() {
  curl -sf -X POST -H "Api-Key: $api_key" -H 'X-Pinecone-Api-Version: 2025-10' -H 'Content-Type: application/json' \
    -d '{}' "http://127.0.0.1:$pinecone_port/describe_index_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalVectorCount"])'
}
has_records() { [ "$(records 2>/dev/null || echo 0)" -gt 0 ]; }
wait_for "a record in the Pinecone emulator" 900 has_records
first_record_s=$(python3 -c "import time; print(f'{time.time() - $booted_at:.1f}')")

wait_for "SSH with the image's key" 120 guest true
service() { guest systemctl show glimpse -p "$1" --value; }
running() { [ "$(service ActiveState)/$(service SubState)" = active/running ]; }
wait_for "glimpse.service active (Type=notify, READY=1)" 60 running
status_text="$(service StatusText)"
[ -n "$status_text" ] || fail "the service sent no STATUS="
guest systemctl status glimpse --no-pager | grep -q "Status: \"" || fail "systemctl status shows no Status line"
log "ok: STATUS=$status_text"

# The timeline of this boot, before any restart, in seconds since the kernel started (the
# guest's monotonic clock): systemd-time-wait-sync's hold (no time source is reachable, so the
# drop-in's bound ends it), the daemon's start, and multi-user.target (which waits for the
# daemon's READY=1).
since_boot() { guest systemctl show "$1" -p "$2" --value | python3 -c 'import sys; print(f"{int(sys.stdin.read()) / 1e6:.1f}")'; }
multi_user_s="$(since_boot multi-user.target ActiveEnterTimestampMonotonic)"
time_sync_s="$(since_boot systemd-time-wait-sync.service ExecMainStartTimestampMonotonic)"
time_synced_s="$(since_boot time-sync.target ActiveEnterTimestampMonotonic)"
glimpse_start_s="$(since_boot glimpse.service ExecMainStartTimestampMonotonic)"

# 2. storage
data_bytes="$(guest lsblk -bno SIZE /dev/disk/by-label/glimpse-data)"
[ "$data_bytes" -gt $(( (data_mib + free_mib / 2) * 1024 * 1024 )) ] || fail "glimpse-data is $data_bytes bytes: it did not grow"
fs_bytes="$(guest df -B1 --output=size /var/lib/glimpse | tail -n1 | tr -d ' ')"
[ "$fs_bytes" -gt $(( (data_mib + free_mib / 2) * 1024 * 1024 )) ] || fail "the file system on /var/lib/glimpse is $fs_bytes bytes: it did not grow"
[ "$(guest stat -c %U /var/lib/glimpse)" = glimpse ] || fail "/var/lib/glimpse is not the service's"
log "ok: glimpse-data grew from ${data_mib} MiB to $(( data_bytes / 1048576 )) MiB (file system $(( fs_bytes / 1048576 )) MiB), owned by glimpse"

# 3. sandbox and credential
pid="$(service MainPID)"
guest "grep -qE '^[0-9]+ [0-9]+ [^ ]+ / / ro[, ]' /proc/$pid/mountinfo" || fail "/ is writable to the daemon (ProtectSystem=strict)"
guest "grep -qE ' /var/lib/glimpse rw[, ]' /proc/$pid/mountinfo" || fail "/var/lib/glimpse is not writable to the daemon"
guest "test -s /run/credentials/glimpse.service/pinecone-api-key" || fail "no pinecone-api-key credential"
guest "! grep -q '$api_key' /proc/$pid/environ" || fail "the API key is in the daemon's environment"
log "ok: / read-only and /var/lib/glimpse writable inside the sandbox; the key arrives as a credential only"

# 3b. the encrypted credential store, exactly as yocto/README.md ("Provisioning") tells: the plain
# file is emptied, so records that still arrive carry the key decrypted by systemd.
guest "mkdir -p /etc/credstore.encrypted && printf '%s' '$api_key' \
  | systemd-creds encrypt --name=pinecone-api-key - /etc/credstore.encrypted/pinecone-api-key 2>/dev/null"
guest ": > /etc/glimpse/credentials/pinecone-api-key"
guest "mkdir -p /etc/systemd/system/glimpse.service.d && printf '%s\n' '[Service]' 'LoadCredential=' \
  'LoadCredential=mqtt-password:/etc/glimpse/credentials/mqtt-password' \
  'LoadCredentialEncrypted=pinecone-api-key:/etc/credstore.encrypted/pinecone-api-key' \
  >/etc/systemd/system/glimpse.service.d/credstore.conf && systemctl daemon-reload && systemctl restart glimpse"
before_encrypted="$(records)"
more_records() { [ "$(records)" -gt "$before_encrypted" ]; }
wait_for "records sent with the key from the encrypted credential store" 300 more_records
guest "test -s /run/credentials/glimpse.service/pinecone-api-key && ! test -s /etc/glimpse/credentials/pinecone-api-key" \
  || fail "the service did not get the key from the encrypted store"
guest "grep -q . /etc/credstore.encrypted/pinecone-api-key && ! grep -q '$api_key' /etc/credstore.encrypted/pinecone-api-key" \
  || fail "the credential store holds the key in clear"

# 4. broker: the device's id is its machine id for Glimpse (device.id is left out of the config).
expected_device="glimpse-$(guest systemd-id128 machine-id --app-specific=74a20344e6e34c14acb0eb6ef5710538 | cut -c1-12)"
online() { grep -q "^glimpse/$expected_device/availability online" "$run/mqtt.log"; }
wait_for "glimpse/$expected_device/availability online at the host's broker" 60 online
stats() { grep -q "^glimpse/$expected_device/stats " "$run/mqtt.log"; }
wait_for "stats from $expected_device at the broker" 60 stats


# 5. watchdog: inference hangs; the stage stops beating, the daemon stops pinging, systemd restarts it.
restarts_before="$(service NRestarts)"
guest "mkdir -p /run/systemd/system/glimpse.service.d && printf '[Service]\nEnvironment=GLIMPSE_TEST_WEDGE_INFERENCE=1\nWatchdogSec=20\n' >/run/systemd/system/glimpse.service.d/wedge.conf && systemctl daemon-reload && systemctl restart glimpse"
restarted() { [ "$(service NRestarts)" -gt "$restarts_before" ]; }
wait_for "a watchdog restart by systemd with inference wedged" 240 restarted
guest "journalctl -u glimpse -b --no-pager | grep -q 'Watchdog timeout'" || fail "systemd restarted glimpse, but not for its watchdog"
guest "rm -r /run/systemd/system/glimpse.service.d && systemctl daemon-reload"

guest "systemctl poweroff" || true
wait "$qemu_pid" 2>/dev/null || true
echo
echo "boot-test: passed; the first boot's timeline, seconds since the kernel started (the guest's monotonic clock):"
echo "  systemd-time-wait-sync started      ${time_sync_s}"
echo "  time-sync.target reached            ${time_synced_s}  (no time source: the drop-in's 90 s bound)"
echo "  glimpse.service started             ${glimpse_start_s}"
echo "  multi-user.target reached           ${multi_user_s}  (after glimpse's READY=1)"
echo "  first record at the emulator        ${first_record_s}  (the host's clock since qemu started; the kernel starts within a second of it)"
