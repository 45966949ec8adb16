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

# Which decoders the image carries (set in local.conf or a kas file), any of:
#   hardware  the board's own: the Jetson's nvv4l2decoder (+ nvvidconv, csi:// via Argus), the
#             Raspberry Pi's v4l2h264dec (in the V4L2 plugin, always present for USB cameras)
#   libav     avdec_h264/avdec_h265 from FFmpeg: any H.264/H.265 stream, in software. Flagged
#             commercial (codec patents): accept commercial_gstreamer1.0-libav and commercial_ffmpeg.
#   openh264  Cisco's OpenH264 (H.264 only, software): needs meta-multimedia's openh264 and
#             PACKAGECONFIG:append:pn-gstreamer1.0-plugins-bad = " openh264".
# Without a software decoder a stream the hardware cannot take fails to start, and `glimpse check`
# says which element is missing (docs/decoders.md).
GLIMPSE_DECODERS ??= "hardware libav"

# The pipeline: uridecodebin ! ... ! videorate ! videoconvert ! appsink, or videotestsrc for test:.
# RTSP/RTP over TCP or UDP, MP4 files, V4L2 USB cameras, H.264/H.265 parsers.
GLIMPSE_SOFTWARE_DECODERS = "\
    ${@bb.utils.contains('GLIMPSE_DECODERS', 'libav', 'gstreamer1.0-libav', '', d)} \
    ${@bb.utils.contains('GLIMPSE_DECODERS', 'openh264', 'gstreamer1.0-plugins-bad-openh264', '', d)} \
"
RDEPENDS:${PN} = "\
    ${GLIMPSE_SOFTWARE_DECODERS} \
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
GLIMPSE_TEGRA_DECODERS = "\
    gstreamer1.0-plugins-nvarguscamerasrc \
    gstreamer1.0-plugins-nvvidconv \
    gstreamer1.0-plugins-nvvideo4linux2 \
    tegra-argus-daemon \
"
RDEPENDS:${PN}:append:tegra = " ${@bb.utils.contains('GLIMPSE_DECODERS', 'hardware', d.getVar('GLIMPSE_TEGRA_DECODERS'), '', d)}"

# The inference engine (docs/inference.md): "tract" (default) is inside the daemon; "onnxruntime"
# adds ONNX Runtime's library, built for the machine by a layer that has a recipe for it, e.g.
# meta-tegra-community's onnxruntime with CUDA and TensorRT on a Jetson, or meta-imx's meta-ml.
# The site's glimpse.toml then sets [inference] engine = "onnxruntime" and its providers.
GLIMPSE_INFERENCE ??= "tract"
GLIMPSE_ONNXRUNTIME_PACKAGE ??= "onnxruntime"
GLIMPSE_ENGINE_PACKAGES = "${@d.getVar('GLIMPSE_ONNXRUNTIME_PACKAGE') if d.getVar('GLIMPSE_INFERENCE') == 'onnxruntime' else ''}"
RDEPENDS:${PN}:append = " ${GLIMPSE_ENGINE_PACKAGES}"

# A misspelt decoder would silently leave the image without one; a misspelt engine, without its
# library.
# nooelint: oelint.task.noanonpython
python () {
    unknown = set((d.getVar("GLIMPSE_DECODERS") or "").split()) - {"hardware", "libav", "openh264"}
    if unknown:
        bb.fatal("GLIMPSE_DECODERS: unknown %s; choose from hardware, libav, openh264" % ", ".join(sorted(unknown)))
    if not d.getVar("GLIMPSE_DECODERS").split():
        bb.fatal("GLIMPSE_DECODERS is empty: no camera stream could be decoded")
    if d.getVar("GLIMPSE_INFERENCE") not in ("tract", "onnxruntime"):
        bb.fatal("GLIMPSE_INFERENCE = %r; choose tract or onnxruntime" % d.getVar("GLIMPSE_INFERENCE"))
}

# Optional sources: http(s):// cameras and MJPEG USB cameras.
RRECOMMENDS:${PN} = "\
    gstreamer1.0-plugins-good-jpeg \
    gstreamer1.0-plugins-good-soup \
"
