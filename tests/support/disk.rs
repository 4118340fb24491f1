//! A small disk that a test can fill: a tmpfs of a given size, mounted for the test and
//! unmounted when it ends. Mounting needs root; without it the test skips, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};

/// A tmpfs mounted at a directory of the test's own.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `64k`, `3m`) at `at`;
    /// `None` (skip) when that is not allowed and not in CI.
    pub fn mount(at: PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                !super::in_ci(),
                "CI=true but a tmpfs cannot be mounted (the test needs root)"
            );
            eprintln!("skipped: cannot mount a tmpfs (not root)");
            return None;
        }
        Some(Self(at))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes until the disk is full.
    pub fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).unwrap();
        while file.write_all(&[0; 4096]).is_ok() {}
    }

    /// Gives back what [`fill`](Self::fill) took.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
