//! The names and shapes of an ONNX file's inputs and outputs, and the operators its graph uses,
//! read without loading its weights: the protobuf is walked field by field and only the graph's
//! `input` and `output` entries and each node's `op_type` are decoded, so a 160 MB DETR costs a
//! few kilobytes to identify (`[detector] family = "auto"`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use prost::Message;
use tract_onnx::pb::{tensor_shape_proto::dimension::Value as DimValue, type_proto::Value as TypeValue, ValueInfoProto};

use super::ModelError;

/// ModelProto's `graph`; GraphProto's `node`, `input` and `output`; NodeProto's `op_type`
/// (onnx.proto).
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const NODE_OP_TYPE: u64 = 4;
/// An operator's name longer than this is not one.
const MAX_OP_TYPE: u64 = 256;
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
    /// The operators the top-level graph uses (`TopK`, `Conv`, ...).
    pub operators: std::collections::BTreeSet<String>,
}

/// Reads `path`'s graph inputs, outputs and operators.
pub fn read(path: &Path) -> Result<Signature, ModelError> {
    let invalid = |reason: String| ModelError::Invalid { path: path.to_owned(), reason };
    let unreadable = |e: std::io::Error| ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() };
    // Checked before the open: opening a FIFO or a device would block or read forever.
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    let file = File::open(path).map_err(unreadable)?;
    let mut reader = Walker { inner: BufReader::new(file), at: 0, end: metadata.len() };
    let mut signature = Signature::default();
    while reader.at < reader.end {
        let (field, wire) = reader.key().map_err(|e| invalid(e.to_string()))?;
        if field == MODEL_GRAPH && wire == 2 {
            let graph_end = reader.length().map_err(|e| invalid(e.to_string()))?;
            reader.within(graph_end, |reader| read_graph(reader, &mut signature)).map_err(invalid)?;
        } else {
            reader.skip(wire).map_err(|e| invalid(e.to_string()))?;
        }
    }
    if signature.inputs.is_empty() || signature.outputs.is_empty() {
        return Err(invalid("no graph inputs or outputs found".into()));
    }
    Ok(signature)
}

fn read_graph(reader: &mut Walker, signature: &mut Signature) -> Result<(), String> {
    while reader.at < reader.end {
        let (field, wire) = reader.key().map_err(|e| e.to_string())?;
        let list = match (field, wire) {
            (GRAPH_NODE, 2) => {
                let node_end = reader.length().map_err(|e| e.to_string())?;
                if let Some(operator) = reader.within(node_end, read_op_type)? {
                    signature.operators.insert(operator);
                }
                continue;
            }
            (GRAPH_INPUT, 2) => &mut signature.inputs,
            (GRAPH_OUTPUT, 2) => &mut signature.outputs,
            _ => {
                reader.skip(wire).map_err(|e| e.to_string())?;
                continue;
            }
        };
        let bytes = reader.field_bytes(MAX_VALUE_INFO, "a graph input or output description")?;
        let info = ValueInfoProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        list.push(value(info));
    }
    Ok(())
}

/// A NodeProto's `op_type`, skipping the rest of it (a Constant node may hold a large tensor).
fn read_op_type(reader: &mut Walker) -> Result<Option<String>, String> {
    let mut operator = None;
    while reader.at < reader.end {
        let (field, wire) = reader.key().map_err(|e| e.to_string())?;
        if (field, wire) != (NODE_OP_TYPE, 2) {
            reader.skip(wire).map_err(|e| e.to_string())?;
            continue;
        }
        let bytes = reader.field_bytes(MAX_OP_TYPE, "an operator name")?;
        operator = Some(String::from_utf8(bytes).map_err(|_| "an operator name that is not UTF-8".to_string())?);
    }
    Ok(operator)
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

/// A protobuf reader that knows where it is, and skips without reading what it skips. Every
/// length it is given and every field it skips is checked against the end of the message it is
/// in, so a corrupt file is an error, not a seek backwards, an overflow or a read across fields.
struct Walker {
    inner: BufReader<File>,
    at: u64,
    /// The end of the message being read: the file's, or a nested message's within it.
    end: u64,
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

    /// Reads a length-delimited field's length and returns where the field ends.
    fn length(&mut self) -> std::io::Result<u64> {
        let len = self.varint()?;
        self.end_of(len)
    }

    /// Where a field of `len` bytes from here ends, if it ends within the message.
    fn end_of(&self, len: u64) -> std::io::Result<u64> {
        self.at.checked_add(len).filter(|&end| end <= self.end).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a field of {len} bytes runs past the end of its message"))
        })
    }

    /// Runs `read` on the nested message that ends at `end`, then goes on with the outer one.
    fn within<T>(&mut self, end: u64, read: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        let outer = std::mem::replace(&mut self.end, end);
        let result = read(self);
        self.end = outer;
        match result {
            // A key or varint read across the nested message's end.
            Ok(_) if self.at != end => Err("a field runs past the end of its message".into()),
            result => result,
        }
    }

    fn key(&mut self) -> std::io::Result<(u64, u64)> {
        let key = self.varint()?;
        Ok((key >> 3, key & 7))
    }

    /// A length-delimited field's bytes, at most `max` of them (`what` names it in the error).
    fn field_bytes(&mut self, max: u64, what: &str) -> Result<Vec<u8>, String> {
        let len = self.length().map_err(|e| e.to_string())? - self.at;
        if len > max {
            return Err(format!("{what} of {len} bytes"));
        }
        let mut bytes = vec![0; len as usize];
        self.inner.read_exact(&mut bytes).map_err(|e| e.to_string())?;
        self.at += len;
        Ok(bytes)
    }

    fn skip(&mut self, wire: u64) -> std::io::Result<()> {
        let end = match wire {
            0 => return self.varint().map(drop),
            1 => self.end_of(8)?,
            2 => self.length()?,
            5 => self.end_of(4)?,
            _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("protobuf wire type {wire}"))),
        };
        // Lengths are bounded by the file's size, so the step fits an i64.
        self.inner.seek_relative((end - self.at) as i64)?;
        self.at = end;
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
        assert!(signature.operators.contains("Conv") && !signature.operators.contains("TopK"), "{:?}", signature.operators);
    }

    #[test]
    fn a_real_time_detr_shows_its_query_selection() {
        let signature = super::read(&tiny("rtdetr-tiny-random.onnx")).expect("signature");
        assert!(signature.operators.contains("TopK"), "{:?}", signature.operators);
    }

    #[test]
    fn a_length_past_the_end_of_the_file_is_an_error_not_a_seek() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cut.onnx");
        // Field 1, length-delimited, with a length of 2^63 + 1: wraps an i64 and overflows `at`.
        let mut bytes = vec![0x0a];
        bytes.extend([0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        std::fs::write(&path, bytes).expect("write");
        let error = super::read(&path).expect_err("a corrupt length").to_string();
        assert!(error.contains("past the end of its message"), "{error}");
    }

    #[test]
    fn a_fifo_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pipe.onnx");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let error = super::read(&path).expect_err("a FIFO is not a model").to_string();
        assert!(error.contains("not a regular file"), "{error}");
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
