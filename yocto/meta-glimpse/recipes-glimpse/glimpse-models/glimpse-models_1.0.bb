# nooelint: oelint.var.mandatoryvar.HOMEPAGE,oelint.var.suggestedvar.BUGTRACKER,oelint.var.suggestedvar.CVE_PRODUCT,oelint.var.bbclassextend
# (Model files you export and host yourself: no homepage, tracker or CVE product; target data only.)
SUMMARY = "ONNX models for Glimpse: the DETR detector and the CLIP vision embedder"
DESCRIPTION = "Installs detr.onnx and clip_vision.onnx, as written by models/export.py, from a \
               URL you set, after checking each file's sha256."
SECTION = "multimedia"
# The licences of the default checkpoints: facebook/detr-resnet-50 (Apache-2.0) and
# openai/clip-vit-base-patch32 (MIT). Change this with the models; the files carry no licence
# text, hence the common licence files.
LICENSE = "Apache-2.0 & MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10 \
                    file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302 \
"

# Set all three in local.conf (or a kas file): the directory holding both files, and their
# sha256 (`sha256sum detr.onnx clip_vision.onnx`, or the sha256 lines of export.py's manifest.toml).
GLIMPSE_MODELS_URI ??= ""
GLIMPSE_DETR_SHA256 ??= ""
GLIMPSE_CLIP_SHA256 ??= ""

# The version moves with the models, so a package feed or an update sees new models as an upgrade.
PV = "1.0+detr${@d.getVar('GLIMPSE_DETR_SHA256')[:12]}+clip${@d.getVar('GLIMPSE_CLIP_SHA256')[:12]}"

# DL_DIR keeps downloads by file name, so each is named after its checksum: new models behind the
# same URL are downloaded again instead of failing against the cached old file.
SRC_URI = "${GLIMPSE_MODELS_URI}/detr.onnx;name=detr;downloadfilename=glimpse-detr-${GLIMPSE_DETR_SHA256}.onnx \
           ${GLIMPSE_MODELS_URI}/clip_vision.onnx;name=clip;downloadfilename=glimpse-clip-vision-${GLIMPSE_CLIP_SHA256}.onnx \
"
SRC_URI[detr.sha256sum] = "${GLIMPSE_DETR_SHA256}"
SRC_URI[clip.sha256sum] = "${GLIMPSE_CLIP_SHA256}"

S = "${WORKDIR}"

inherit allarch

# Skipped at parse time rather than failing in do_fetch: an image that asks for this recipe then
# stops at once, naming what to set, and an unchecked download is never used.
# nooelint: oelint.task.noanonpython
python () {
    missing = [v for v in ("GLIMPSE_MODELS_URI", "GLIMPSE_DETR_SHA256", "GLIMPSE_CLIP_SHA256") if not d.getVar(v)]
    if missing:
        raise bb.parse.SkipRecipe("set %s (see yocto/README.md)" % ", ".join(missing))
}

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# The paths that config/glimpse.example.toml and the image's /etc/glimpse/glimpse.toml use.
do_install() {
    install -d ${D}${datadir}/glimpse/models
    install -m 0644 ${WORKDIR}/glimpse-detr-${GLIMPSE_DETR_SHA256}.onnx ${D}${datadir}/glimpse/models/detr.onnx
    install -m 0644 ${WORKDIR}/glimpse-clip-vision-${GLIMPSE_CLIP_SHA256}.onnx ${D}${datadir}/glimpse/models/clip_vision.onnx
}

FILES:${PN} += "${datadir}/glimpse/models"
