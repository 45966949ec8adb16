//! Pictures people upload on the search page, kept a short while so that a search by picture
//! is a URL like any other (`/?picture=ID`): the page's script sends the file to
//! `POST /pictures` and goes where the answer says. In memory only, bounded in count and age.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pictures kept at once, and their bytes at most; the oldest goes first.
const KEPT: usize = 16;
const KEPT_BYTES: usize = 64 << 20;
/// How long a picture's search stays a working URL.
const AGE: Duration = Duration::from_secs(3600);

/// A picture, its id and when it came.
type Kept = (String, Instant, Arc<Vec<u8>>);

#[derive(Default)]
pub struct Uploads {
    kept: Mutex<VecDeque<Kept>>,
}

impl Uploads {
    /// Keeps `picture` and returns its id: 24 random hex digits.
    pub fn keep(&self, picture: Vec<u8>) -> String {
        let id: String = (0..3).map(|_| format!("{:08x}", rand::random::<u32>())).collect();
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|(_, at, _)| at.elapsed() < AGE);
        kept.push_back((id.clone(), Instant::now(), Arc::new(picture)));
        while kept.len() > KEPT || (kept.len() > 1 && kept.iter().map(|(_, _, p)| p.len()).sum::<usize>() > KEPT_BYTES) {
            kept.pop_front();
        }
        id
    }

    /// The picture kept under `id`, while it is.
    pub fn get(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|(kept_id, at, _)| kept_id == id && at.elapsed() < AGE).map(|(_, _, picture)| picture.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_found_by_its_id_until_newer_ones_push_it_out() {
        let uploads = Uploads::default();
        let first = uploads.keep(vec![1]);
        assert_eq!(first.len(), 24);
        assert_eq!(uploads.get(&first).as_deref(), Some(&vec![1]));
        assert!(uploads.get("0123456789abcdef01234567").is_none());
        for i in 0..KEPT {
            uploads.keep(vec![i as u8]);
        }
        assert!(uploads.get(&first).is_none(), "the oldest goes first");
        let big = uploads.keep(vec![0; KEPT_BYTES / 2 + 1]);
        let bigger = uploads.keep(vec![0; KEPT_BYTES / 2 + 1]);
        assert!(uploads.get(&big).is_none() && uploads.get(&bigger).is_some(), "and at most KEPT_BYTES are kept");
    }
}
