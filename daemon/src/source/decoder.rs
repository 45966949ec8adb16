//! Which video decoder a camera uses. `auto` prefers the platform's hardware decoder when its
//! GStreamer element is installed and falls back to software; `software` never uses hardware;
//! any other value names one element. The table is in docs/decoders.md.
//!
//! The choice is a pure function of the codec, the mode and the set of installed elements, so
//! it is tested without hardware; `source/` applies it through uridecodebin's `autoplug-select`.

use serde::Deserialize;

/// `cameras[].decoder`
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DecoderMode {
    #[default]
    Auto,
    Software,
    Element(String),
}

impl<'de> Deserialize<'de> for DecoderMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "auto" => DecoderMode::Auto,
            "software" => DecoderMode::Software,
            _ => DecoderMode::Element(s),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    /// Anything else (MJPEG from USB cameras, VP8, ...): GStreamer's own choice.
    Other,
}

impl Codec {
    /// The codec of a compressed stream's caps name, e.g. `video/x-h264`.
    pub fn from_caps_name(name: &str) -> Self {
        match name {
            "video/x-h264" => Codec::H264,
            "video/x-h265" => Codec::H265,
            _ => Codec::Other,
        }
    }
}

/// Hardware decoders in order of preference. Only one family exists on a given board.
const HARDWARE_H264: [&str; 6] = ["nvv4l2decoder", "v4l2slh264dec", "v4l2h264dec", "vah264dec", "vaapih264dec", "mppvideodec"];
const HARDWARE_H265: [&str; 6] = ["nvv4l2decoder", "v4l2slh265dec", "v4l2h265dec", "vah265dec", "vaapih265dec", "mppvideodec"];
const SOFTWARE_H264: [&str; 2] = ["avdec_h264", "openh264dec"];
const SOFTWARE_H265: [&str; 2] = ["avdec_h265", "libde265dec"];

/// Every element name this module knows as a hardware decoder.
pub fn is_hardware(element: &str) -> bool {
    HARDWARE_H264.contains(&element) || HARDWARE_H265.contains(&element)
}

/// The decoder element to use for `codec`, or `None` to let GStreamer choose (codecs this
/// table does not cover). `hardware_failed` is set after a hardware decoder failed on this
/// camera, so `auto` falls back to software.
pub fn choose(codec: Codec, mode: &DecoderMode, installed: &dyn Fn(&str) -> bool, hardware_failed: bool) -> Result<Option<String>, String> {
    let (hardware, software): (&[&str], &[&str]) = match codec {
        Codec::H264 => (&HARDWARE_H264, &SOFTWARE_H264),
        Codec::H265 => (&HARDWARE_H265, &SOFTWARE_H265),
        Codec::Other => {
            return match mode {
                DecoderMode::Element(name) if installed(name) => Ok(Some(name.clone())),
                _ => Ok(None),
            }
        }
    };
    let first = |list: &[&str]| list.iter().find(|e| installed(e)).map(|e| e.to_string());
    match mode {
        DecoderMode::Auto if !hardware_failed => Ok(first(hardware).or_else(|| first(software))),
        DecoderMode::Auto | DecoderMode::Software => {
            first(software).map(Some).ok_or_else(|| format!("no software decoder for {codec:?} is installed: install gstreamer1.0-libav"))
        }
        DecoderMode::Element(name) if installed(name) => Ok(Some(name.clone())),
        DecoderMode::Element(name) => Err(format!("decoder element {name:?} is not installed (gst-inspect-1.0 {name} finds nothing)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(elements: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |e| elements.contains(&e)
    }

    const DESKTOP: &[&str] = &["avdec_h264", "avdec_h265", "openh264dec"];
    const JETSON: &[&str] = &["nvv4l2decoder", "avdec_h264", "avdec_h265"];
    const PI4: &[&str] = &["v4l2h264dec", "v4l2h265dec", "avdec_h264", "avdec_h265"];
    const PI5: &[&str] = &["v4l2slh265dec", "avdec_h264", "avdec_h265"];
    const INTEL: &[&str] = &["vah264dec", "vah265dec", "avdec_h264", "avdec_h265"];
    const ROCKCHIP: &[&str] = &["mppvideodec", "avdec_h264"];

    fn auto(codec: Codec, elements: &'static [&'static str]) -> Option<String> {
        choose(codec, &DecoderMode::Auto, &board(elements), false).expect("a decoder")
    }

    #[test]
    fn auto_prefers_each_platforms_hardware_decoder() {
        assert_eq!(auto(Codec::H264, JETSON).as_deref(), Some("nvv4l2decoder"));
        assert_eq!(auto(Codec::H265, JETSON).as_deref(), Some("nvv4l2decoder"));
        assert_eq!(auto(Codec::H264, PI4).as_deref(), Some("v4l2h264dec"));
        assert_eq!(auto(Codec::H264, INTEL).as_deref(), Some("vah264dec"));
        assert_eq!(auto(Codec::H265, INTEL).as_deref(), Some("vah265dec"));
        assert_eq!(auto(Codec::H264, ROCKCHIP).as_deref(), Some("mppvideodec"));
    }

    #[test]
    fn auto_falls_back_to_software_where_there_is_no_hardware_for_the_codec() {
        assert_eq!(auto(Codec::H264, DESKTOP).as_deref(), Some("avdec_h264"));
        // The Raspberry Pi 5 decodes HEVC in hardware but H.264 only in software.
        assert_eq!(auto(Codec::H264, PI5).as_deref(), Some("avdec_h264"));
        assert_eq!(auto(Codec::H265, PI5).as_deref(), Some("v4l2slh265dec"));
    }

    #[test]
    fn after_a_hardware_failure_auto_uses_software() {
        let chosen = choose(Codec::H264, &DecoderMode::Auto, &board(JETSON), true).expect("decoder");
        assert_eq!(chosen.as_deref(), Some("avdec_h264"));
    }

    #[test]
    fn software_mode_never_uses_hardware_and_says_what_to_install() {
        let chosen = choose(Codec::H264, &DecoderMode::Software, &board(JETSON), false).expect("decoder");
        assert_eq!(chosen.as_deref(), Some("avdec_h264"));
        let err = choose(Codec::H265, &DecoderMode::Software, &board(&["nvv4l2decoder"]), false).expect_err("none");
        assert!(err.contains("gstreamer1.0-libav"));
    }

    #[test]
    fn a_named_element_is_used_or_reported_missing() {
        let named = DecoderMode::Element("openh264dec".into());
        assert_eq!(choose(Codec::H264, &named, &board(DESKTOP), false).expect("ok").as_deref(), Some("openh264dec"));
        let missing = DecoderMode::Element("nvv4l2decoder".into());
        assert!(choose(Codec::H264, &missing, &board(DESKTOP), false).expect_err("missing").contains("not installed"));
    }

    #[test]
    fn other_codecs_are_left_to_gstreamer() {
        assert_eq!(auto(Codec::Other, DESKTOP), None);
        assert_eq!(Codec::from_caps_name("image/jpeg"), Codec::Other);
        assert!(is_hardware("v4l2slh264dec") && !is_hardware("avdec_h264"));
    }
}
