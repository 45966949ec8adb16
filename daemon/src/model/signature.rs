//! The names and shapes of an ONNX file's inputs and outputs, read without loading its weights:
//! the protobuf is walked field by field and only the graph's `input` and `output` entries are
//! decoded, so a 160 MB DETR costs a few kilobytes to identify (`[detector] family = "auto"`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use prost::Message;
use tract_onnx::pb::{tensor_shape_proto::dimension::Value as DimValue, type_proto::Value as TypeValue, ValueInfoProto};

use super::ModelError;

/// ModelProto's `graph`; GraphProto's `input` and `output` (onnx.proto).
const MODEL_GRAPH: u64 = 7;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
/// A ValueInfoProto larger than this is not a plain tensor's description.
const MAX_VALUE_INFO: u64 = 1 << 16;

/// One input or output: its name and dimensions (`None` where the file names a symbol instead).
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub dims: Vec<Option<usize>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signature {
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
}

/// Reads `path`'s graph inputs and outputs.
pub fn read(path: &Path) -> Result<Signature, ModelError> {
    let invalid = |reason: String| ModelError::Invalid { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|e| ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
    let end = file.metadata().map_err(|e| ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() })?.len();
    let mut reader = Walker { inner: BufReader::new(file), at: 0 };
    let mut signature = Signature::default();
    while reader.at < end {
        let (field, wire) = reader.key().map_err(|e| invalid(e.to_string()))?;
        if field == MODEL_GRAPH && wire == 2 {
            let len = reader.varint().map_err(|e| invalid(e.to_string()))?;
            let graph_end = reader.at + len;
            read_graph(&mut reader, graph_end, &mut signature).map_err(invalid)?;
        } else {
            reader.skip(wire).map_err(|e| invalid(e.to_string()))?;
        }
    }
    if signature.inputs.is_empty() || signature.outputs.is_empty() {
        return Err(invalid("no graph inputs or outputs found".into()));
    }
    Ok(signature)
}

fn read_graph(reader: &mut Walker, end: u64, signature: &mut Signature) -> Result<(), String> {
    while reader.at < end {
        let (field, wire) = reader.key().map_err(|e| e.to_string())?;
        let list = match (field, wire) {
            (GRAPH_INPUT, 2) => &mut signature.inputs,
            (GRAPH_OUTPUT, 2) => &mut signature.outputs,
            _ => {
                reader.skip(wire).map_err(|e| e.to_string())?;
                continue;
            }
        };
        let len = reader.varint().map_err(|e| e.to_string())?;
        if len > MAX_VALUE_INFO {
            return Err(format!("a graph input or output description of {len} bytes"));
        }
        let mut bytes = vec![0; len as usize];
        reader.bytes(&mut bytes).map_err(|e| e.to_string())?;
        let info = ValueInfoProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        list.push(value(info));
    }
    Ok(())
}

fn value(info: ValueInfoProto) -> Value {
    let shape = info.r#type.and_then(|t| t.value).and_then(|TypeValue::TensorType(t)| t.shape);
    let dims = shape
        .map(|s| {
            s.dim.into_iter().map(|d| match d.value {
                Some(DimValue::DimValue(n)) if n > 0 => Some(n as usize),
                _ => None,
            })
        })
        .into_iter()
        .flatten()
        .collect();
    Value { name: info.name, dims }
}

/// A protobuf reader that knows where it is, and skips without reading what it skips.
struct Walker {
    inner: BufReader<File>,
    at: u64,
}

impl Walker {
    fn varint(&mut self) -> std::io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let mut byte = [0u8];
            self.inner.read_exact(&mut byte)?;
            self.at += 1;
            value |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a varint longer than 10 bytes"))
    }

    fn key(&mut self) -> std::io::Result<(u64, u64)> {
        let key = self.varint()?;
        Ok((key >> 3, key & 7))
    }

    fn bytes(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.at += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, wire: u64) -> std::io::Result<()> {
        let len = match wire {
            0 => return self.varint().map(drop),
            1 => 8,
            2 => self.varint()?,
            5 => 4,
            _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("protobuf wire type {wire}"))),
        };
        self.inner.seek_relative(len as i64)?;
        self.at += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn tiny(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny").join(name)
    }

    #[test]
    fn a_detr_file_names_its_logits_and_boxes() {
        let signature = super::read(&tiny("detr-tiny-random.onnx")).expect("signature");
        assert_eq!(signature.inputs[0].name, "pixel_values");
        let names: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
        assert!(names.contains(&"logits") && names.contains(&"pred_boxes"), "{names:?}");
    }

    #[test]
    fn a_file_that_is_not_onnx_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not.onnx");
        std::fs::write(&path, b"this is text, not a protobuf").expect("write");
        let error = super::read(&path).expect_err("text is not a model").to_string();
        assert!(error.contains("not.onnx"), "{error}");
    }
}
