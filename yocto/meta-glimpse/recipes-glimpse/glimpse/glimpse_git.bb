# nooelint: oelint.var.mandatoryvar.HOMEPAGE,oelint.var.suggestedvar.BUGTRACKER,oelint.var.bbclassextend
# (No public homepage or tracker; a target-only daemon, as it links the target's GStreamer.)
SUMMARY = "Glimpse camera indexer daemon"
DESCRIPTION = "Edge appliance: cameras -> DETR -> CLIP -> durable outbox -> Pinecone, \
               monitored over MQTT. Decodes camera streams with GStreamer, runs both models \
               on the device with tract and runs as a systemd service."
SECTION = "multimedia"
# The daemon's own licence, and those of the crates linked into it (glimpse-licences.inc,
# generated from cargo metadata), so that the licence manifest and INCOMPATIBLE_LICENSE see them.
LICENSE = "Apache-2.0 & ${GLIMPSE_CRATES_LICENSE}"
# The sources have no licence file: the workspace Cargo.toml declares the licence.
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=10;endline=10;md5=2507bd5f0713f05419cd2f22fa06fe62"
# In-house code with no NVD entry; the default (BPN) would match the unrelated Glimpse search tool.
CVE_PRODUCT = "glimpse-camera-indexer"

# gstreamer-app and gstreamer-video link libraries from plugins-base; libsystemd-sys links
# libsystemd (sd_notify and the watchdog). TLS is rustls, so no openssl.
DEPENDS = "glib-2.0 gstreamer1.0 gstreamer1.0-plugins-base systemd"

PV = "0.1.0+git"

# Where the sources come from: host and path of a git repository, and the protocol. The default
# is a placeholder: point it at your copy of the repository. The kas files build the checkout
# they are run from instead: GLIMPSE_GIT_REPO = "${GLIMPSE_REPO_DIR}", GLIMPSE_GIT_PROTOCOL = "file".
GLIMPSE_GIT_REPO ?= "git.example.com/glimpse.git"
GLIMPSE_GIT_PROTOCOL ?= "https"
GLIMPSE_GIT_BRANCH ?= "main"
# The repository this recipe sits in (yocto/meta-glimpse/recipes-glimpse/glimpse/../../../..).
GLIMPSE_REPO_DIR = "${@os.path.normpath(os.path.join(d.getVar('THISDIR'), '..', '..', '..', '..'))}"

# The box's pages and HTTP API (docs/http.md): an address to listen on, e.g. "0.0.0.0:8080",
# turns them on: glimpse.toml gains [http] listen, and the unit the credential http-token
# (systemd/glimpse.service.d/http.conf.example). The token is written on the box, at least 16
# characters, to /etc/glimpse/credentials/http-token; until then `glimpse check` names it.
GLIMPSE_HTTP_LISTEN ?= ""

SRC_URI = "git://${GLIMPSE_GIT_REPO};protocol=${GLIMPSE_GIT_PROTOCOL};branch=${GLIMPSE_GIT_BRANCH} \
           file://glimpse.toml \
"
require glimpse-crates.inc
require glimpse-licences.inc

# cargo runs --frozen, so the commit built must carry the Cargo.lock that glimpse-crates.inc
# was generated from. The layer and the sources live in one repository, so by default the branch
# head is built with the layer of the same checkout; for a release, pin SRCREV here (or in
# local.conf) to the commit whose Cargo.lock the .inc was generated from.
# nooelint: oelint.vars.autorev
SRCREV ?= "${AUTOREV}"

S = "${WORKDIR}/git"

inherit cargo_bin features_check systemd useradd

REQUIRED_DISTRO_FEATURES = "systemd"

# Only the daemon: the workspace also holds a test server (tests/pinecone-emulator).
CARGO_MANIFEST_PATH = "${S}/daemon/Cargo.toml"
CARGO_BUILD_PROFILE = "release"
# do_compile has no network: every crate comes from the fetcher (glimpse-crates.inc).
EXTRA_CARGO_FLAGS = "--frozen"
# Build paths (the work directory, with the sources and every crate) stay out of the binary's
# panic messages and debug info: they become the debug-source path, as for C recipes.
EXTRA_RUSTFLAGS = "--remap-path-prefix=${WORKDIR}=${TARGET_DBGSRC_DIR}"
# Where bitbake's crate fetcher unpacks crates, each with the .cargo-checksum.json cargo needs.
CARGO_VENDORING_DIRECTORY = "${WORKDIR}/cargo_home/bitbake"

# As poky's cargo_common does: cargo takes crates.io packages from the unpacked crates. WORKDIR
# survives between builds (AUTOREV), so the block is replaced, never appended twice: cargo
# refuses a config that defines [source.bitbake] twice.
do_configure:append() {
    cfg="${CARGO_HOME}/config.toml"
    # Older cargo_bin classes write ${CARGO_HOME}/config, which cargo reads in preference.
    if [ -e "${CARGO_HOME}/config" ]; then
        cfg="${CARGO_HOME}/config"
    fi
    touch "$cfg"
    sed -i '/^# glimpse: crates from bitbake$/,/^# glimpse: end$/d' "$cfg"
    printf '# glimpse: crates from bitbake\n[source.bitbake]\ndirectory = "%s"\n\n[source.crates-io]\nreplace-with = "bitbake"\n# glimpse: end\n' \
        "${CARGO_VENDORING_DIRECTORY}" >>"$cfg"
}

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/glimpse.service ${D}${systemd_system_unitdir}/glimpse.service

    # The service runs as glimpse and reads its configuration; root edits it.
    install -d -m 0755 ${D}${sysconfdir}/glimpse
    install -m 0640 ${WORKDIR}/glimpse.toml ${D}${sysconfdir}/glimpse/glimpse.toml
    chown root:glimpse ${D}${sysconfdir}/glimpse/glimpse.toml

    # LoadCredential= fails the start when its file is missing, so both exist, empty: an empty
    # MQTT password means none, an empty Pinecone key is reported by `glimpse check`.
    # systemd (root) reads them; the service sees copies in $CREDENTIALS_DIRECTORY.
    install -d -m 0700 ${D}${sysconfdir}/glimpse/credentials
    install -m 0600 /dev/null ${D}${sysconfdir}/glimpse/credentials/pinecone-api-key
    install -m 0600 /dev/null ${D}${sysconfdir}/glimpse/credentials/mqtt-password

    if [ -n "${GLIMPSE_HTTP_LISTEN}" ]; then
        printf '\n[http]\nlisten = "%s"\n' "${GLIMPSE_HTTP_LISTEN}" >> ${D}${sysconfdir}/glimpse/glimpse.toml
        install -m 0600 /dev/null ${D}${sysconfdir}/glimpse/credentials/http-token
        install -d ${D}${systemd_system_unitdir}/glimpse.service.d
        install -m 0644 ${S}/systemd/glimpse.service.d/http.conf.example \
            ${D}${systemd_system_unitdir}/glimpse.service.d/http.conf
    fi

    # glimpse.service waits for real time (time-sync.target) at most this long: boards without a
    # battery-backed clock boot in the past (docs/service.md, "Clock at boot").
    install -d ${D}${systemd_system_unitdir}/systemd-time-wait-sync.service.d
    install -m 0644 ${S}/systemd/systemd-time-wait-sync.service.d/glimpse.conf \
        ${D}${systemd_system_unitdir}/systemd-time-wait-sync.service.d/glimpse.conf

    # Card images: grows the glimpse-data partition to the end of the card (glimpse-grow-data).
    install -m 0644 ${S}/systemd/glimpse-grow-data.service ${D}${systemd_system_unitdir}/glimpse-grow-data.service
    install -d ${D}${libexecdir}/glimpse
    install -m 0755 ${S}/systemd/glimpse-grow-data ${D}${libexecdir}/glimpse/glimpse-grow-data

    # The unit's Documentation= points here.
    install -d ${D}${docdir}/glimpse
    install -m 0644 ${S}/README.md ${D}${docdir}/glimpse/README.md
}

# Jetson: NVIDIA's device nodes and the Argus daemon (systemd/glimpse.service.d/jetson.conf.example).
do_install:append:tegra() {
    install -d ${D}${systemd_system_unitdir}/glimpse.service.d
    install -m 0644 ${S}/systemd/glimpse.service.d/jetson.conf.example \
        ${D}${systemd_system_unitdir}/glimpse.service.d/jetson.conf
}
PACKAGE_ARCH:tegra = "${MACHINE_ARCH}"

SYSTEMD_PACKAGES = "${PN} ${PN}-grow-data"
SYSTEMD_SERVICE:${PN} = "glimpse.service"
SYSTEMD_SERVICE:${PN}-grow-data = "glimpse-grow-data.service"
# Started at boot: an appliance (the class's default, said here so that nobody has to look it up).
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

USERADD_PACKAGES = "${PN}"
# The unit's SupplementaryGroups= needs render; groupadd leaves an existing group alone.
GROUPADD_PARAM:${PN} = "--system render"
USERADD_PARAM:${PN} = "--system --user-group --no-create-home --home-dir ${localstatedir}/lib/glimpse \
                       --shell ${base_sbindir}/nologin --groups video,render glimpse"

# glimpse-grow-data: for images whose wks gives /var/lib/glimpse its own partition (the Pi's).
PACKAGES =+ "${PN}-grow-data"
FILES:${PN}-grow-data += "${systemd_system_unitdir}/glimpse-grow-data.service ${libexecdir}/glimpse/glimpse-grow-data"
FILES:${PN} += "${systemd_system_unitdir}/glimpse.service.d \
                ${systemd_system_unitdir}/systemd-time-wait-sync.service.d \
"
# Package upgrades keep local edits and secrets.
CONFFILES:${PN} = "${sysconfdir}/glimpse/glimpse.toml \
                   ${sysconfdir}/glimpse/credentials/pinecone-api-key \
                   ${sysconfdir}/glimpse/credentials/mqtt-password \
                   ${@'${sysconfdir}/glimpse/credentials/http-token' if d.getVar('GLIMPSE_HTTP_LISTEN') else ''} \
"

# TLS at run time: reqwest's rustls verifies Pinecone's and the bucket's certificates against the
# system trust store (ca-certificates); rtsps:// and https:// cameras go through GIO's TLS
# (glib-networking). The GStreamer plugins are machine-specific (packagegroup-glimpse, which the
# image installs): a package of the tune's architecture that depended on a machine-arch one would
# be rebuilt for every machine (sstate's machine-arch leak).
RDEPENDS:${PN} = "ca-certificates glib-networking"
RDEPENDS:${PN}-grow-data = "udev util-linux-partx util-linux-sfdisk"
