use super::*;

fn record(id: usize, values: Vec<f32>, camera: &str, ts: i64) -> Record {
    let mut record = crate::record::test_record(&format!("d:{camera}:{id}"), camera, ts, values);
    record.metadata.label = if id.is_multiple_of(2) { "car" } else { "person" }.into();
    record.metadata.crop = Some(format!("k/{id}.jpg"));
    record
}

fn unit(seed: u64, dimension: usize) -> Vec<f32> {
    random_unit(seed, dimension)
}

fn filled(dir: &Path, n: usize, dimension: usize) -> (Index, Vec<Record>) {
    let mut index = Index::open(dir, &SearchConfig::default()).expect("open");
    let now = crate::clock::unix_ms();
    let records: Vec<Record> = (0..n).map(|i| record(i, unit(i as u64, dimension), ["gate", "yard"][i % 2], now - i as i64)).collect();
    for (i, chunk) in records.chunks(100).enumerate() {
        index.add(chunk, (i as u64 + 1) * 100).expect("add");
    }
    (index, records)
}

fn exact_top(records: &[Record], query: &[f32], k: usize, keep: impl Fn(&Record) -> bool) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> =
        records.iter().filter(|r| keep(r)).map(|r| (r.values.iter().zip(query).map(|(a, b)| a * b).sum(), r.id.as_str())).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|(_, id)| id.to_owned()).collect()
}

#[test]
fn the_top_k_equals_an_exact_scan_s_with_and_without_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, records) = filled(dir.path(), 3000, 64);
    for seed in 10_000..10_010 {
        let query = Query { vector: unit(seed, 64), top_k: 10, ..Query::default() };
        let ids: Vec<String> = index.search(&query).expect("search").into_iter().map(|h| h.id).collect();
        assert_eq!(ids, exact_top(&records, &query.vector, 10, |_| true), "seed {seed}");
        let filtered = Query { cameras: vec!["yard".into()], labels: vec!["person".into()], ..query.clone() };
        let ids: Vec<String> = index.search(&filtered).expect("search").into_iter().map(|h| h.id).collect();
        let keep = |r: &Record| r.metadata.camera == "yard" && r.metadata.label == "person";
        assert_eq!(ids, exact_top(&records, &query.vector, 10, keep), "seed {seed}, filtered");
    }
}

#[test]
fn reopening_finds_every_record_and_a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, records) = filled(dir.path(), 250, 32);
    assert_eq!((index.len(), index.indexed_seq()), (250, Some(300)));
    drop(index);
    // A crash mid-append: half a row at the end of the vector file.
    let vec_file = dir.path().join("index/000000.vec");
    let mut bytes = std::fs::read(&vec_file).expect("read");
    bytes.extend_from_slice(&[7; 30]);
    std::fs::write(&vec_file, bytes).expect("write");
    let mut index = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
    assert_eq!(index.len(), 250);
    index.add(&[record(999, unit(999, 32), "gate", 5)], 301).expect("append after the cut");
    let again = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
    assert_eq!(again.len(), 251);
    let hit = &again.search(&Query { vector: records[42].values.clone(), top_k: 1, ..Query::default() }).expect("search")[0];
    assert_eq!((hit.id.as_str(), hit.metadata.crop.as_deref()), ("d:gate:42", Some("k/42.jpg")));
    assert!((hit.score - 1.0).abs() < 1e-5);
    assert_eq!(again.vector_of("d:gate:42").expect("lookup"), Some(records[42].values.clone()));
    assert_eq!(again.vector_of("d:gate:nope").expect("lookup"), None);
}

#[test]
fn time_bounds_filter_by_capture_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, records) = filled(dir.path(), 200, 16);
    let newest = records[0].metadata.ts;
    let query = Query { vector: unit(5, 16), top_k: 200, since_ms: Some(newest - 9), until_ms: Some(newest), ..Query::default() };
    assert_eq!(index.search(&query).expect("search").len(), 10);
}
