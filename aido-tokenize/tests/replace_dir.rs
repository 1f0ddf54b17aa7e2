//! `io_util::replace_dir`, the one folder-replace rule of every folder writer (classifiers,
//! perturbation models, best-epoch checkpoints): the old folder is never removed before the new
//! one is in place. Before it, the writers deleted the old folder and then renamed the new one
//! in, so a failure (or an interruption) between the two left no folder at all.

#![allow(clippy::unwrap_used)]

use aido_tokenize::io_util::replace_dir;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_folder_is_replaced_whole_and_nothing_is_left_beside_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("classifier");
    let staged = t.path().join("classifier.partial");
    write(&dir, "old.txt", "old");
    write(&staged, "new.txt", "new");
    replace_dir(&staged, &dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("new.txt")).unwrap(), "new");
    assert!(!dir.join("old.txt").exists());
    assert!(!staged.exists());
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the folder itself remains: {left:?}");
    // Into a place with no folder yet.
    let staged2 = t.path().join("b.partial");
    write(&staged2, "x", "1");
    replace_dir(&staged2, &t.path().join("b")).unwrap();
    assert!(t.path().join("b/x").is_file());
}

#[test]
fn a_failed_replace_keeps_the_old_folder() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("model");
    write(&dir, "weights", "old");
    // The staged folder is missing (its writer failed): the old folder must survive.
    let err = replace_dir(&t.path().join("model.partial"), &dir).unwrap_err();
    assert!(err.to_string().contains("model.partial"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("weights")).unwrap(), "old");
}
