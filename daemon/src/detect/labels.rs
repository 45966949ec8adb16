//! COCO label names as facebook/detr-resnet-50 numbers them (91 ids, some unused: "N/A").

const COCO: [&str; COCO91_COLUMNS] = [
    "N/A",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// The name of class `id` for a model with `classes` real classes; models that are not
/// COCO-shaped get `"unknown"` rather than a wrong name.
pub fn coco_label(id: usize, classes: usize) -> &'static str {
    if classes == COCO91_COLUMNS {
        COCO.get(id).copied().unwrap_or("unknown")
    } else {
        "unknown"
    }
}

/// Score columns of a detector numbering COCO as DETR does (SSD: column 0 is its background).
pub const COCO91_COLUMNS: usize = 91;

/// Classes of the detectors trained on COCO's 80 (NanoDet, the real-time DETRs): DETR's names
/// without "N/A".
pub const COCO80_CLASSES: usize = 80;

/// The name of class `index` of an 80-class COCO detector.
pub fn coco80_label(index: usize) -> &'static str {
    COCO.iter().copied().filter(|&name| name != "N/A").nth(index).unwrap_or("unknown")
}

/// Whether `label` is one the detector can name (configuration checks).
pub fn is_label(label: &str) -> bool {
    label != "N/A" && COCO.contains(&label)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_match_the_detr_resnet_50_config() {
        assert_eq!(super::coco_label(1, 91), "person");
        assert_eq!(super::coco_label(3, 91), "car");
        assert_eq!(super::coco_label(90, 91), "toothbrush");
        assert_eq!(super::coco_label(1, 10), "unknown");
    }

    #[test]
    fn the_80_classes_are_the_91_without_gaps() {
        assert_eq!(super::coco80_label(0), "person");
        assert_eq!(super::coco80_label(1), "bicycle");
        assert_eq!(super::coco80_label(41), "cup");
        assert_eq!(super::coco80_label(79), "toothbrush");
        assert_eq!(super::coco80_label(80), "unknown");
    }
}
