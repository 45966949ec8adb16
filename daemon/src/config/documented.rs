//! The README's configuration table and `config/glimpse.example.toml` say the same defaults as
//! the code: each row's default, written into a minimal config, must parse to the same
//! [`Config`] as leaving the key out; so must every value the example file sets, except the
//! few it sets to something else on purpose.

use std::path::Path;

use super::Config;

/// Only the required keys (and the optional sections, so their defaults are in play).
const MINIMAL: &str = r#"
[device]
id = "docs"
data_dir = "/var/lib/glimpse"
[[cameras]]
name = "street"
uri = "test:"
[detector]
model = "/m/detr.onnx"
[embedder]
model = "/m/clip.onnx"
[pinecone]
host = "https://index.example"
[mqtt]
host = "127.0.0.1"
[http]
listen = "127.0.0.1:8080"
[[triggers]]
name = "t"
record = "r"
threshold = 0.3
"#;

/// Keys the example file sets to a value other than the default, to show how.
const EXAMPLE_SETS_ON_PURPOSE: &[&str] = &["pinecone.namespace"];

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).expect(path)
}

fn parse(table: &toml::Table) -> Config {
    Config::parse(&toml::to_string(table).expect("TOML"), Path::new("docs")).unwrap_or_else(|e| panic!("{e}"))
}

/// `minimal` with `key` (a README key path such as `cameras[].sample_fps`) set to `value`.
fn with_key(key: &str, value: toml::Value) -> toml::Table {
    let mut table: toml::Table = MINIMAL.parse().expect("minimal TOML");
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a key");
    let mut at = &mut table;
    for part in parts {
        at = match part.strip_suffix("[]") {
            Some(array) => at[array].as_array_mut().and_then(|a| a[0].as_table_mut()).expect("an array of tables"),
            None => at.entry(part).or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut().expect("a table"),
        };
    }
    at.insert(last.to_owned(), value);
    table
}

/// A README default as a TOML value: literal TOML, else a bare word or size as a string.
fn value(text: &str) -> toml::Value {
    let text = text.trim().trim_matches('`');
    format!("v = {text}").parse::<toml::Table>().map(|t| t["v"].clone()).unwrap_or_else(|_| toml::Value::String(text.to_owned()))
}

/// Every README row with a default: (full key path, default text). `a.b` / `c` rows name two keys.
fn readme_defaults() -> Vec<(String, String)> {
    let readme = repo_file("README.md");
    let mut rows = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (keys, defaults) = (cells[1], cells[2]);
        let keys: Vec<&str> = keys.split(" / ").map(|k| k.trim_matches('`')).collect();
        let defaults: Vec<&str> = defaults.split(" / ").collect();
        let section = keys[0].rsplit_once('.').map_or("", |(s, _)| s);
        for (i, key) in keys.iter().enumerate() {
            let default = defaults.get(i).or(defaults.first()).copied().unwrap_or_default();
            if ["required", "section optional", "from the machine id", "when `[mqtt]` or `[http]` is set", "—", "none", ""]
                .contains(&default)
                || key.contains('<')
            {
                continue;
            }
            let full = if i == 0 { key.to_string() } else { format!("{section}.{key}") };
            rows.push((full, default.to_owned()));
        }
    }
    rows
}

#[test]
fn every_default_in_the_readme_is_the_code_s_default() {
    let defaults = parse(&MINIMAL.parse().expect("minimal"));
    let rows = readme_defaults();
    assert!(rows.len() > 30, "the README table was not found: {rows:?}");
    for (key, default) in rows {
        assert!(parse(&with_key(&key, value(&default))) == defaults, "README says {key} defaults to {default}; the code disagrees");
    }
}

#[test]
fn the_example_config_shows_the_defaults_it_claims() {
    let defaults = parse(&MINIMAL.parse().expect("minimal"));
    let example: toml::Table = repo_file("config/glimpse.example.toml").parse().expect("the example is TOML");
    for (key, _) in readme_defaults().into_iter().filter(|(k, _)| !EXAMPLE_SETS_ON_PURPOSE.contains(&k.as_str())) {
        let mut at = &toml::Value::Table(example.clone());
        for part in key.split('.') {
            at = match part.strip_suffix("[]") {
                Some(array) => &at[array][0],
                None => match at.get(part) {
                    Some(v) => v,
                    None => break,
                },
            };
        }
        if at.is_table() {
            continue; // the example leaves this key out
        }
        assert!(parse(&with_key(&key, at.clone())) == defaults, "the example sets {key} = {at}, which is not its default");
    }
    Config::parse(&toml::to_string(&example).expect("TOML"), Path::new("example")).expect("the example config is valid");
}
