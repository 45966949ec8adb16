//! Where each key of a TOML file sits, so that every configuration problem can name its line and
//! column. The typed structs never see spans: problems carry a key path and are placed here.

use std::collections::HashMap;
use std::ops::Range;

pub use crate::validate::{KeyPath, Position, Seg};

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
