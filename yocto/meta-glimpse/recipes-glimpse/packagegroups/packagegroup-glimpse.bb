# nooelint: oelint.var.suggestedvar.BUGTRACKER
# (No public tracker.)
SUMMARY = "GStreamer plugins the Glimpse daemon uses"
DESCRIPTION = "Sources (RTSP, files, HTTP, V4L2, test pattern), parsers, decoders and the \
               elements of Glimpse's pipeline tail, plus each board's hardware decoders and \
               camera sources."
SECTION = "multimedia"
LICENSE = "MIT"

# The machine overrides below make the package contents machine-specific.
PACKAGE_ARCH = "${MACHINE_ARCH}"

inherit packagegroup

# TLS: reqwest's rustls verifies Pinecone's and the bucket's certificates against the system
# trust store (ca-certificates); rtsps:// and https:// cameras go through GIO's TLS
# (glib-networking).
# The pipeline: uridecodebin ! ... ! videorate ! videoconvert ! appsink, or videotestsrc for test:.
# RTSP/RTP over TCP or UDP, MP4 files, V4L2 USB cameras (and the Raspberry Pi's stateful H.264
# decoder, v4l2h264dec), H.264/H.265 parsers, and avdec_* as the software decoders.
RDEPENDS:${PN} = "\
    ca-certificates \
    glib-networking \
    gstreamer1.0-libav \
    gstreamer1.0-plugins-bad-videoparsersbad \
    gstreamer1.0-plugins-base-app \
    gstreamer1.0-plugins-base-playback \
    gstreamer1.0-plugins-base-typefindfunctions \
    gstreamer1.0-plugins-base-videoconvertscale \
    gstreamer1.0-plugins-base-videorate \
    gstreamer1.0-plugins-base-videotestsrc \
    gstreamer1.0-plugins-good-isomp4 \
    gstreamer1.0-plugins-good-rtp \
    gstreamer1.0-plugins-good-rtpmanager \
    gstreamer1.0-plugins-good-rtsp \
    gstreamer1.0-plugins-good-udp \
    gstreamer1.0-plugins-good-video4linux2 \
"

# Jetson (meta-tegra): nvv4l2decoder, nvvidconv (NVMM to system memory) and csi:// through
# nvarguscamerasrc, which needs the Argus daemon.
RDEPENDS:${PN}:append:tegra = " \
    gstreamer1.0-plugins-nvarguscamerasrc \
    gstreamer1.0-plugins-nvvidconv \
    gstreamer1.0-plugins-nvvideo4linux2 \
    tegra-argus-daemon \
"

# Optional sources: http(s):// cameras and MJPEG USB cameras.
RRECOMMENDS:${PN} = "\
    gstreamer1.0-plugins-good-jpeg \
    gstreamer1.0-plugins-good-soup \
"
