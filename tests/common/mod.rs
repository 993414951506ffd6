//! Helpers shared by the end-to-end tests of the `bms` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `bms` binary with `args`.
pub fn bms(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bms"))
        .args(args)
        .output()
        .expect("run bms")
}

/// Runs `bms` and fails the test, showing stderr, unless it succeeds.
pub fn ok(args: &[&str]) -> Output {
    let out = bms(args);
    assert!(
        out.status.success(),
        "bms {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                p(dir.path()),
            ])
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "this test fills a small tmpfs and needs to mount one (root or CAP_SYS_ADMIN)"
        );
        Tmpfs { dir }
    }

    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), p(self.dir.path())])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", p(self.dir.path())])
            .status();
    }
}
