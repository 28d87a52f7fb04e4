//! What the SD image's box writes for its owner and its OS from `callbox.toml`: the Wi-Fi
//! supplicant file ([`wifi`]) and `callbox-status.txt` on the boot partition ([`status`]),
//! which tells the owner the box's address, the dashboard and the URLs to paste into Twilio.

pub mod status;
pub mod wifi;

use std::io::Write;
use std::path::Path;

/// Writes `text` to `path` through a temporary file in the same directory, so a power cut
/// leaves the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is; FAT has no directory fsync to
        // speak of, and an error there is not worth failing for.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
