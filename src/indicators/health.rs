//! Health checks that raise the `fault` indicator: free space where the call log lives.

use std::path::Path;

const MIB: u64 = 1024 * 1024;

/// The disk fault for `dir`, if it has less than `min_free_mb` MiB available (or cannot be
/// checked).
pub fn disk_fault(dir: &Path, min_free_mb: u64) -> Option<String> {
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            (free < min_free_mb.saturating_mul(MIB))
                .then(|| format!("only {} MiB free in {} (minimum {min_free_mb} MiB)", free / MIB, dir.display()))
        }
        Err(e) => Some(format!("cannot check free space in {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_fault_compares_free_space_with_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(disk_fault(dir.path(), 0), None);
        let fault = disk_fault(dir.path(), u64::MAX / MIB).unwrap();
        assert!(fault.contains("MiB free in"), "{fault}");
        let missing = disk_fault(&dir.path().join("nope"), 0).unwrap();
        assert!(missing.contains("cannot check free space"), "{missing}");
    }
}
