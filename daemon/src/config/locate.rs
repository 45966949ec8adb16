//! Where each key of a TOML file sits, so that every configuration problem can name its line and
//! column. The typed structs never see spans: problems carry a key path and are placed here.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `cameras[1].sample_fps`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    pub fn parent(&self) -> Option<Self> {
        let mut segs = self.0.clone();
        segs.pop().map(|_| Self(segs))
    }

    pub fn from_serde_ignored(path: &serde_ignored::Path<'_>) -> Self {
        use serde_ignored::Path;
        match path {
            Path::Root => Self::root(),
            Path::Seq { parent, index } => Self::from_serde_ignored(parent).index(*index),
            Path::Map { parent, key } => Self::from_serde_ignored(parent).key(key),
            Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => Self::from_serde_ignored(parent),
        }
    }

    pub fn from_serde_path(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let mut out = Self::root();
        for seg in path.iter() {
            out = match seg {
                Segment::Seq { index } => out.index(*index),
                Segment::Map { key } => out.key(key),
                Segment::Enum { variant } => out.key(variant),
                Segment::Unknown => out,
            };
        }
        out
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A line and column, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The byte spans of every key and value in one TOML document.
pub struct SpanIndex {
    text: String,
    /// Where each key is written.
    keys: HashMap<KeyPath, Range<usize>>,
    /// Where each key's value is written (tables: their header).
    values: HashMap<KeyPath, Range<usize>>,
}

impl SpanIndex {
    pub fn new(text: &str, doc: &toml_edit::Document<String>) -> Self {
        let mut index = Self { text: text.to_owned(), keys: HashMap::new(), values: HashMap::new() };
        index.table(doc.as_table(), &KeyPath::root());
        index
    }

    /// The position of `path`'s value (or of its key, with `at_key`), falling back to the
    /// nearest ancestor that is written in the file.
    pub fn locate(&self, path: &KeyPath, at_key: bool) -> Option<Position> {
        let mut current = Some(path.clone());
        while let Some(p) = current {
            let span = if at_key { self.keys.get(&p).or(self.values.get(&p)) } else { self.values.get(&p).or(self.keys.get(&p)) };
            if let Some(span) = span {
                return Some(position(&self.text, span.start));
            }
            current = p.parent();
        }
        None
    }

    fn table(&mut self, table: &toml_edit::Table, path: &KeyPath) {
        if let Some(span) = table.span() {
            self.values.entry(path.clone()).or_insert(span);
        }
        for (key, item) in table.iter() {
            let child = path.key(key);
            if let Some(span) = table.key(key).and_then(|k| k.span()) {
                self.keys.insert(child.clone(), span);
            }
            self.item(item, &child);
        }
    }

    fn item(&mut self, item: &toml_edit::Item, path: &KeyPath) {
        match item {
            toml_edit::Item::Table(t) => self.table(t, path),
            toml_edit::Item::ArrayOfTables(arr) => {
                for (i, t) in arr.iter().enumerate() {
                    self.table(t, &path.index(i));
                }
            }
            toml_edit::Item::Value(v) => self.value(v, path),
            toml_edit::Item::None => {}
        }
    }

    fn value(&mut self, value: &toml_edit::Value, path: &KeyPath) {
        if let Some(span) = value.span() {
            self.values.insert(path.clone(), span);
        }
        match value {
            toml_edit::Value::InlineTable(t) => {
                for (key, v) in t.iter() {
                    let child = path.key(key);
                    if let Some(span) = t.key(key).and_then(|k| k.span()) {
                        self.keys.insert(child.clone(), span);
                    }
                    self.value(v, &child);
                }
            }
            toml_edit::Value::Array(arr) => {
                for (i, v) in arr.iter().enumerate() {
                    self.value(v, &path.index(i));
                }
            }
            _ => {}
        }
    }
}

/// The line and column of byte `offset` in `text`.
pub fn position(text: &str, offset: usize) -> Position {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| before[nl + 1..].chars().count()) + 1;
    Position { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_in_tables_and_arrays_of_tables() {
        let text = "[device]\nid = \"a\"\n\n[[cameras]]\nname = \"x\"\n\n[[cameras]]\n  sample_fps = 2\n";
        let doc = toml_edit::Document::parse(text.to_owned()).expect("valid toml");
        let index = SpanIndex::new(text, &doc);
        let fps = KeyPath::root().key("cameras").index(1).key("sample_fps");
        assert_eq!(index.locate(&fps, true), Some(Position { line: 8, column: 3 }));
        assert_eq!(index.locate(&fps, false), Some(Position { line: 8, column: 16 }));
        assert_eq!(index.locate(&KeyPath::root().key("device").key("id"), true), Some(Position { line: 2, column: 1 }));
        assert_eq!(fps.to_string(), "cameras[1].sample_fps");
    }
}
