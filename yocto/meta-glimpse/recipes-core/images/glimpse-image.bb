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

# glimpse-doc: the README that the unit's Documentation= (file:///usr/share/doc/glimpse) names.
IMAGE_INSTALL:append = " \
    glimpse \
    glimpse-doc \
    glimpse-models \
    packagegroup-glimpse \
"
