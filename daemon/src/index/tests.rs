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
    for chunk in numbered(&records, 0).chunks(100) {
        index.add(chunk.iter().copied()).expect("add");
    }
    (index, records)
}

/// The records with outbox sequence numbers from `first` on.
fn numbered(records: &[Record], first: u64) -> Vec<(u64, &Record)> {
    records.iter().enumerate().map(|(i, r)| (first + i as u64, r)).collect()
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
    assert_eq!((index.len(), index.mark()), (250, Some(249)));
    drop(index);
    // A crash mid-append: half a row at the end of the vector file.
    let vec_file = dir.path().join("index/000000.vec");
    let mut bytes = std::fs::read(&vec_file).expect("read");
    bytes.extend_from_slice(&[7; 30]);
    std::fs::write(&vec_file, bytes).expect("write");
    let mut index = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
    assert_eq!((index.len(), index.mark()), (250, Some(249)));
    index.add([(301, &record(999, unit(999, 32), "gate", 5))]).expect("append after the cut");
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

#[test]
fn adding_again_what_the_index_has_makes_no_second_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, records) = filled(dir.path(), 150, 16);
    // A stale mark's catch-up: the outbox's last page, again, with one new record after it.
    let mut again = numbered(&records[100..], 100);
    let new = record(150, unit(150, 16), "gate", 1);
    again.push((150, &new));
    index.add(again).expect("add");
    let reopened = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
    assert_eq!((reopened.len(), reopened.mark()), (151, Some(150)));
}

#[test]
fn zero_filled_tails_and_first_rows_are_cut_off_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = filled(dir.path(), 120, 16);
    drop(index);
    let files = ["vec", "f32", "meta"].map(|ext| dir.path().join(format!("index/000000.{ext}")));
    // A power cut after the sizes grew but before the data reached the card: zeros at the end.
    for path in &files {
        let mut bytes = std::fs::read(path).expect("read");
        bytes.extend(std::iter::repeat_n(0u8, 4096));
        std::fs::write(path, bytes).expect("write");
    }
    let index = Index::open(dir.path(), &SearchConfig::default()).expect("a zero-filled tail is cut");
    assert_eq!((index.len(), index.mark()), (120, Some(119)));
    drop(index);
    // Worse: every byte of the segment zero-filled, its first row included.
    for path in &files {
        let len = std::fs::metadata(path).expect("size").len() as usize;
        std::fs::write(path, vec![0u8; len]).expect("write");
    }
    let mut index = Index::open(dir.path(), &SearchConfig::default()).expect("a zero-filled first row is cut");
    assert_eq!((index.len(), index.mark()), (0, None));
    let fresh = record(7, unit(7, 16), "gate", 1);
    index.add([(0, &fresh)]).expect("the segment is written again from its start");
    let reopened = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
    assert_eq!((reopened.len(), reopened.mark()), (1, Some(0)));
}

#[test]
fn search_never_shows_a_record_past_retain_days_even_before_its_segment_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SearchConfig { retain_days: 30.0, ..SearchConfig::default() };
    let mut index = Index::open(dir.path(), &config).expect("open");
    let now = crate::clock::unix_ms();
    let old = record(0, unit(0, 16), "gate", now - 31 * 86_400_000);
    let new = record(1, unit(0, 16), "gate", now - 1000);
    index.add([(0, &old), (1, &new)]).expect("add");
    let hits = index.search(&Query { vector: unit(0, 16), top_k: 10, ..Query::default() }).expect("search");
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["d:gate:1"]);
    assert_eq!(index.len(), 2, "the segment holds both until every row in it has expired");
}

#[test]
fn max_bytes_is_kept_to_within_a_tenth_by_segments_sized_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SearchConfig { max_bytes: crate::validate::ByteSize(16 << 20), ..SearchConfig::default() };
    let mut index = Index::open(dir.path(), &config).expect("open");
    assert_eq!(index.segment_rows(512), 559, "a tenth of 16 MiB in rows of 512 dimensions");
    let now = crate::clock::unix_ms();
    let records: Vec<Record> = (0..12_000).map(|i| record(i, unit(i as u64, 512), "gate", now - 1000)).collect();
    for chunk in numbered(&records, 0).chunks(500) {
        index.add(chunk.iter().copied()).expect("add");
        assert!(index.bytes() <= (16 << 20) * 11 / 10, "{} bytes over 16 MiB by more than 10 %", index.bytes());
    }
    assert!(index.bytes() > (16 << 20) * 8 / 10, "and the cap is used: {} bytes", index.bytes());
}

#[test]
fn a_batch_that_fails_part_way_leaves_no_row_behind_for_its_retry_to_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, _) = filled(dir.path(), 10, 16);
    let good = record(10, unit(10, 16), "gate", 1);
    let odd = record(11, unit(11, 8), "gate", 1);
    assert!(matches!(index.add([(10, &good), (11, &odd)]), Err(IndexError::Dimension { .. })));
    assert_eq!((index.len(), index.mark()), (10, Some(9)), "nothing of the failed batch counts");
    index.add([(10, &good)]).expect("the retry");
    let reopened = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
    assert_eq!((reopened.len(), reopened.mark()), (11, Some(10)));
}

#[test]
fn a_search_in_the_keeper_s_process_reads_only_rows_the_keeper_made_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let durable = DurableMark::default();
    let before = Index::open_to_search(dir.path(), &SearchConfig::default(), Some(&durable)).expect("open");
    assert!(before.is_empty(), "nothing is read before the keeper published its mark");
    let (mut index, records) = filled(dir.path(), 300, 16);
    drop(before);
    index.publish_mark_to(durable.clone());
    // Rows on disk past the published mark, as a batch that fails later would leave them.
    let mut other = Index::open(dir.path(), &SearchConfig::default()).expect("a second writer, for the test only");
    let late: Vec<Record> = (300..310).map(|i| record(i, unit(i as u64, 16), "gate", crate::clock::unix_ms())).collect();
    other.add(numbered(&late, 300)).expect("add");
    let search = Index::open_to_search(dir.path(), &SearchConfig::default(), Some(&durable)).expect("open");
    assert_eq!((search.len(), search.mark()), (300, Some(299)), "only the durable rows");
    assert!(search.vector_of(&late[0].id).expect("lookup").is_none());
    assert!(search.vector_of(&records[299].id).expect("lookup").is_some());
    durable.publish(Some(309)); // as the keeper's next batch would
    let search = Index::open_to_search(dir.path(), &SearchConfig::default(), Some(&durable)).expect("open");
    assert_eq!(search.len(), 310, "the keeper's mark moved and searches follow it");
    assert_eq!(Index::open_to_search(dir.path(), &SearchConfig::default(), None).expect("open").len(), 310);
}

#[test]
fn reopening_to_search_reads_only_newer_segments_and_finds_what_a_fresh_open_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 256-row segments (the smallest), so that 1,000 records make four.
    let config = SearchConfig { max_bytes: crate::validate::ByteSize(1 << 20), ..SearchConfig::default() };
    let mut keeper = Index::open(dir.path(), &config).expect("open");
    let durable = DurableMark::default();
    keeper.publish_mark_to(durable.clone());
    let now = crate::clock::unix_ms();
    let records: Vec<Record> = (0..1_000).map(|i| record(i, unit(i as u64, 16), "gate", now - 1000)).collect();
    keeper.add(numbered(&records[..600], 0)).expect("add");
    let searching = Index::open_to_search(dir.path(), &config, Some(&durable)).expect("open");
    assert_eq!(searching.len(), 600);
    keeper.add(numbered(&records[600..], 600)).expect("add");
    let reopened = searching.reopen_to_search(&durable).expect("reopen");
    let fresh = Index::open_to_search(dir.path(), &config, Some(&durable)).expect("open");
    assert_eq!((reopened.len(), reopened.mark()), (fresh.len(), fresh.mark()));
    assert_eq!(reopened.len(), 1_000);
    let query = Query { vector: unit(700, 16), top_k: 5, ..Query::default() };
    let ids = |index: &Index| index.search(&query).expect("search").into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(&reopened), ids(&fresh));
    assert_eq!(ids(&reopened)[0], records[700].id);
    // A segment removed meanwhile (retention) is gone from the reopened index too.
    let oldest = *reopened.segments.keys().next().expect("segments");
    for ext in ["vec", "f32", "meta"] {
        std::fs::remove_file(dir.path().join(format!("index/{oldest:06}.{ext}"))).expect("remove");
    }
    let after = reopened.reopen_to_search(&durable).expect("reopen");
    assert!(!after.segments.contains_key(&oldest));
    assert_eq!(after.len(), Index::open_to_search(dir.path(), &config, Some(&durable)).expect("open").len());
}

#[test]
fn a_reopened_newest_segment_knows_its_new_rows_newest_time_as_a_fresh_open_does() {
    // Reopening reads only the newest segment's rows past those counted before; their times
    // must still count (retention and the stats read the segment's newest time).
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SearchConfig::default();
    let mut keeper = Index::open(dir.path(), &config).expect("open");
    let durable = DurableMark::default();
    keeper.publish_mark_to(durable.clone());
    let now = crate::clock::unix_ms();
    let records: Vec<Record> = (0..150).map(|i| record(i, unit(i as u64, 16), "gate", now - if i < 100 { 5000 } else { 1000 })).collect();
    keeper.add(numbered(&records[..100], 0)).expect("add");
    let searching = Index::open_to_search(dir.path(), &config, Some(&durable)).expect("open");
    keeper.add(numbered(&records[100..], 100)).expect("add");
    let reopened = searching.reopen_to_search(&durable).expect("reopen");
    let fresh = Index::open_to_search(dir.path(), &config, Some(&durable)).expect("open");
    let newest = |index: &Index| index.segments.values().next_back().and_then(Segment::newest_ts);
    assert_eq!(reopened.len(), 150);
    assert_eq!(newest(&reopened), newest(&fresh));
    assert_eq!(newest(&reopened), Some(now - 1000));
}
