# nooelint: oelint.var.suggestedvar.BUGTRACKER,oelint.var.suggestedvar.CVE_PRODUCT
# (No public tracker; an image is not a CVE product, its packages are.)
SUMMARY = "A device image running the Glimpse daemon"
DESCRIPTION = "core-image with systemd, Glimpse (enabled at boot), its models, its GStreamer \
               plugins and an SSH server to reach the device."
SECTION = "images"
LICENSE = "MIT"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_FEATURES += "ssh-server-openssh"

# Root logs in over SSH with a key: OpenSSH's default (PermitRootLogin prohibit-password) refuses
# passwords for root, and a key is what a device in the field should use anyway. Set it to one or
# more public keys, separated by ";", e.g. in local.conf or kas/site.yml:
#   GLIMPSE_SSH_AUTHORIZED_KEYS = "ssh-ed25519 AAAA... me@laptop"
GLIMPSE_SSH_AUTHORIZED_KEYS ??= ""
ROOTFS_POSTPROCESS_COMMAND += "glimpse_authorized_keys"
glimpse_authorized_keys[doc] = "Writes GLIMPSE_SSH_AUTHORIZED_KEYS to root's authorized_keys in the image"
glimpse_authorized_keys() {
    if [ -n "${GLIMPSE_SSH_AUTHORIZED_KEYS}" ]; then
        install -d -m 0700 ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh
        printf '%s\n' "${GLIMPSE_SSH_AUTHORIZED_KEYS}" | tr ';' '\n' | sed 's/^ *//; /^$/d' \
            >${IMAGE_ROOTFS}${ROOT_HOME}/.ssh/authorized_keys
        chmod 0600 ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh/authorized_keys
    fi
}

# glimpse-doc: the README that the unit's Documentation= (file:///usr/share/doc/glimpse) names.
IMAGE_INSTALL:append = " \
    glimpse \
    glimpse-doc \
    glimpse-models \
    packagegroup-glimpse \
"
# The Pi's card image gives /var/lib/glimpse its own partition (wic/glimpse-sdimage-raspberrypi.wks),
# grown to the end of the card at first boot.
IMAGE_INSTALL:append:rpi = " glimpse-grow-data"
