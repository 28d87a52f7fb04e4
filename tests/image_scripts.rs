//! The SD image scripts, cheaply: `image/build-image.sh --assemble-only` turns a tiny fake
//! rootfs into a real partitioned image (FAT + ext4, no mounts), `image/check-image.sh` accepts
//! it and rejects broken ones, and the first-boot import (`image/rootfs/callbox-firstboot`)
//! copies, protects and validates the owner's `callbox.toml` with the real `callbox check`.
//! The full debootstrap build (about 15 minutes under emulation) and the qemu boot test are
//! `image/build-image.sh` and `image/boot-test.sh`, run by hand.
//!
//! Needs root (file owners inside the image, `chown root`) and Debian's `dosfstools`,
//! `mtools`, `fdisk` and `e2fsprogs`, so these are ignored by a plain `cargo test`; `.ci/run`
//! runs them as root with those installed (`--include-ignored`).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[path = "common/needs.rs"]
mod needs;
use needs::{Need, require};

/// What each of these tests needs (the checker and the first-boot script use a subset).
const NEEDS: [Need; 6] = [
    Need::Root,
    Need::Program("mkfs.vfat", "dosfstools"),
    Need::Program("mcopy", "mtools"),
    Need::Program("sfdisk", "fdisk"),
    Need::Program("mkfs.ext4", "e2fsprogs"),
    Need::Program("debugfs", "e2fsprogs"),
];

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// A minimal aarch64 ELF header: what the checker and the build script look at (the full
/// build puts the real cross-built binary there).
fn fake_aarch64_binary(path: &Path) {
    let mut elf = vec![0u8; 64];
    elf[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf[16] = 2; // ET_EXEC
    elf[18] = 0xb7; // EM_AARCH64
    fs::write(path, elf).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The parts of a Debian rootfs the overlay and the checker touch, plus the boot files
/// raspi-firmware would have put in /boot/firmware.
fn fake_rootfs(dir: &Path, extra_shadow: &str) {
    write(&dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n");
    write(&dir.join("etc/group"), "root:x:0:\naudio:x:29:\n");
    write(&dir.join("etc/shadow"), &format!("root:*:19000:0:99999:7:::\n{extra_shadow}"));
    write(&dir.join("etc/gshadow"), "root:*::\naudio:*::\n");
    write(&dir.join("etc/machine-id"), "0123456789abcdef0123456789abcdef\n");
    write(&dir.join("etc/ssh/ssh_host_ed25519_key"), "build-time key that must not ship\n");
    write(&dir.join("usr/lib/systemd/system/systemd-timesyncd.service"), "[Unit]\n");
    write(&dir.join("usr/lib/systemd/system/ssh.service"), "[Unit]\n");
    // The packages the image adds for growing the card, Wi-Fi and security updates.
    for program in ["usr/bin/growpart", "usr/sbin/wpa_supplicant", "usr/bin/unattended-upgrade"] {
        write(&dir.join(program), "#!/bin/sh\n");
    }
    write(&dir.join("usr/lib/firmware/brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt"), "fake\n");
    let wants = dir.join("etc/systemd/system");
    fs::create_dir_all(wants.join("sysinit.target.wants")).unwrap();
    fs::create_dir_all(wants.join("multi-user.target.wants")).unwrap();
    symlink(
        "/usr/lib/systemd/system/systemd-timesyncd.service",
        wants.join("sysinit.target.wants/systemd-timesyncd.service"),
    )
    .unwrap();
    // What openssh-server's postinst leaves: the overlay must switch it off.
    symlink("/usr/lib/systemd/system/ssh.service", wants.join("multi-user.target.wants/ssh.service")).unwrap();
    symlink("/usr/lib/systemd/system/ssh.service", wants.join("sshd.service")).unwrap();
    let fw = dir.join("boot/firmware");
    write(
        &fw.join("config.txt"),
        "arm_64bit=1\nkernel=vmlinuz-6.1.0-test-arm64\ninitramfs initrd.img-6.1.0-test-arm64 followkernel\n",
    );
    write(&fw.join("cmdline.txt"), "console=tty1 root=LABEL=rootfs rw fsck.repair=yes rootwait\n");
    for f in
        ["vmlinuz-6.1.0-test-arm64", "initrd.img-6.1.0-test-arm64", "start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb"]
    {
        write(&fw.join(f), "fake\n");
    }
}

/// Builds an image from a fake rootfs with `--assemble-only`; returns its path.
fn build(dir: &Path, extra_shadow: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fake_rootfs(&rootfs, extra_shadow);
    let binary = dir.join("callbox-aarch64");
    fake_aarch64_binary(&binary);
    let img = dir.join("sd.img");
    let out = run(Command::new(repo("image/build-image.sh"))
        .arg("--assemble-only")
        .arg(&rootfs)
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&img)
        .env("TMPDIR", dir));
    assert!(out.status.success(), "build-image.sh failed:\n{}", text(&out));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
    assert_eq!(Path::new(&last), img, "the last line names the image");
    img
}

fn check(img: &Path) -> Output {
    run(Command::new(repo("image/check-image.sh")).arg(img))
}

/// Byte offset of partition N, from `sfdisk -d`.
fn partition(img: &Path, n: usize) -> (u64, u64) {
    let out = run(Command::new("sfdisk").arg("-d").arg(img));
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = dump.lines().find(|l| l.contains(&format!("{n} : start="))).unwrap();
    let field = |name: &str| -> u64 {
        let rest = line.split(&format!("{name}=")).nth(1).unwrap();
        rest.split(',').next().unwrap().trim().parse::<u64>().unwrap() * 512
    };
    (field("start"), field("size"))
}

/// Runs debugfs -w commands on the image's ext4 partition (extracted and written back).
fn edit_root(img: &Path, dir: &Path, commands: &[&str]) {
    let (start, size) = partition(img, 2);
    let part = dir.join("root.ext4");
    let dd = |args: Vec<String>| assert!(run(Command::new("dd").args(args)).status.success());
    dd(vec![
        format!("if={}", img.display()),
        format!("of={}", part.display()),
        "bs=1M".into(),
        "iflag=skip_bytes,count_bytes".into(),
        format!("skip={start}"),
        format!("count={size}"),
        "status=none".into(),
    ]);
    for c in commands {
        let out = run(Command::new("debugfs").arg("-w").arg("-R").arg(c).arg(&part));
        assert!(out.status.success(), "debugfs {c}: {}", text(&out));
    }
    dd(vec![
        format!("if={}", part.display()),
        format!("of={}", img.display()),
        "bs=1M".into(),
        "oflag=seek_bytes".into(),
        format!("seek={start}"),
        "conv=notrunc".into(),
        "status=none".into(),
    ]);
}

#[test]
#[ignore = "needs root, dosfstools, mtools, fdisk and e2fsprogs"]
fn assembled_image_passes_the_checker() {
    require(&NEEDS);
    let dir = tempfile::tempdir().unwrap();
    let img = build(dir.path(), "");
    let out = check(&img);
    let report = text(&out);
    assert!(out.status.success(), "check-image.sh rejected a good image:\n{report}");
    assert!(!report.contains("FAIL"), "{report}");
    // The checks the issue names are all there (a checker that checks nothing would pass too).
    for expected in [
        "partition 1 is FAT32",
        "partition 2 is Linux",
        "config.txt names a kernel",
        "/usr/bin/callbox is an aarch64 ELF binary",
        "callbox.socket is enabled",
        "callbox.service is enabled",
        "callbox-firstboot.service is enabled",
        "boot partition has callbox.toml",
        "root's password is locked",
        "sshd is not enabled",
        "no SSH host keys baked into the image",
    ] {
        assert!(report.contains(&format!("ok:   {expected}")), "missing check {expected:?}:\n{report}");
    }
}

#[test]
#[ignore = "needs root, dosfstools, mtools, fdisk and e2fsprogs"]
fn checker_rejects_broken_images() {
    require(&NEEDS);
    let dir = tempfile::tempdir().unwrap();

    // An account with an empty password in the base rootfs: a default login the owner never set.
    let weak = dir.path().join("weak");
    fs::create_dir_all(&weak).unwrap();
    let img = build(&weak, "pi::19000:0:99999:7:::\n");
    let out = check(&img);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL: no account has a usable or empty password (found: pi )"), "{}", text(&out));

    // A good image, then broken after assembly in ways the build would never produce.
    let good = dir.path().join("good");
    fs::create_dir_all(&good).unwrap();
    let img = build(&good, "");
    assert!(check(&img).status.success());

    let no_config = good.join("no-config.img");
    fs::copy(&img, &no_config).unwrap();
    let (boot, _) = partition(&no_config, 1);
    let out = run(Command::new("mdel")
        .arg("-i")
        .arg(format!("{}@@{boot}", no_config.display()))
        .arg("::/callbox.toml")
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(out.status.success(), "{}", text(&out));
    let out = check(&no_config);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL: boot partition has callbox.toml"), "{}", text(&out));

    let ssh_on = good.join("ssh-on.img");
    fs::copy(&img, &ssh_on).unwrap();
    edit_root(
        &ssh_on,
        &good,
        &[
            "symlink /etc/systemd/system/multi-user.target.wants/ssh.service /usr/lib/systemd/system/ssh.service",
            "rm /etc/systemd/system/sockets.target.wants/callbox.socket",
        ],
    );
    let out = check(&ssh_on);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL: sshd is not enabled (found: ssh.service)"), "{report}");
    assert!(report.contains("FAIL: callbox.socket is enabled"), "{report}");
    assert!(report.contains("2 check(s) failed"), "{report}");

    let garbage = good.join("garbage.img");
    fs::write(&garbage, vec![0u8; 1 << 20]).unwrap();
    let out = check(&garbage);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL: an MBR (dos) partition table"), "{}", text(&out));
}

/// Runs the first-boot import against temp dirs with the real `callbox check`.
fn firstboot(boot: &Path, etc: &Path) -> Output {
    run(Command::new(repo("image/rootfs/callbox-firstboot"))
        .env("CALLBOX_BOOT_DIR", boot)
        .env("CALLBOX_ETC_DIR", etc)
        .env("CALLBOX_WIFI_CONF", etc.join("wpa_supplicant/wpa_supplicant-wlan0.conf"))
        .env("CALLBOX_BIN", env!("CARGO_BIN_EXE_callbox"))
        .env("CALLBOX_MANAGE_SSH", "0")
        .env("CALLBOX_FAULT_LED", "0"))
}

const GOOD: &str = "public_url = \"https://calls.bobs-garage.com\"\n\n[admin]\ntoken = \"0123456789abcdef-admin\"\n\n\
                    [twilio]\nauth_token = \"b026324c6904b2a9cb4b88d6d61c81d1\"\n\n[storage]\ndir = \"/var/lib/callbox\"\n";

#[test]
#[ignore = "needs root, dosfstools, mtools, fdisk and e2fsprogs"]
fn first_boot_imports_protects_and_validates_the_owners_config() {
    require(&NEEDS);
    let dir = tempfile::tempdir().unwrap();
    let (boot, etc) = (dir.path().join("boot"), dir.path().join("etc/callbox"));
    fs::create_dir_all(&boot).unwrap();

    // Saved by a Windows editor: byte-order mark and CRLF line ends.
    let windows = format!("\u{feff}{}", GOOD.replace('\n', "\r\n"));
    write(&boot.join("callbox.toml"), &windows);
    let out = firstboot(&boot, &etc);
    assert!(out.status.success(), "{}", text(&out));
    let installed = etc.join("callbox.toml");
    let meta = fs::metadata(&installed).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "the tokens are root-only");
    assert_eq!(meta.uid(), 0);
    assert_eq!(fs::read_to_string(&installed).unwrap(), GOOD.replace('\n', "\r\n"), "BOM stripped, rest as written");
    assert!(text(&out).contains("imported"), "{}", text(&out));
    assert!(text(&out).contains("is valid"), "{}", text(&out));
    assert!(!boot.join("CALLBOX-ERROR.txt").exists());

    // Unchanged on the next boot: not rewritten; loosened permissions are put back.
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o644)).unwrap();
    let out = firstboot(&boot, &etc);
    assert!(out.status.success());
    assert!(!text(&out).contains("imported"), "{}", text(&out));
    assert_eq!(fs::metadata(&installed).unwrap().mode() & 0o777, 0o600);

    // The owner breaks it: one error line naming the key, and the same words on the card.
    write(&boot.join("callbox.toml"), &GOOD.replace("0123456789abcdef-admin", "short"));
    let out = firstboot(&boot, &etc);
    assert!(out.status.success(), "the service, not the import, refuses to run: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one journal line: {stderr}");
    assert!(stderr.starts_with("<3>callbox.toml on the boot partition is not valid:"), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    let on_card = fs::read_to_string(boot.join("CALLBOX-ERROR.txt")).unwrap();
    assert!(on_card.contains("admin.token"), "{on_card}");
    assert!(fs::read_to_string(&installed).unwrap().contains("\"short\""), "what is on the card is what runs");

    // Fixed again: the error file goes away.
    write(&boot.join("callbox.toml"), GOOD);
    let out = firstboot(&boot, &etc);
    assert!(out.status.success());
    assert!(!boot.join("CALLBOX-ERROR.txt").exists(), "{}", text(&out));

    // Wi-Fi in [network]: the supplicant's file, root-only, with the key and not the password;
    // the section removed: the file goes too.
    let wifi = etc.join("wpa_supplicant/wpa_supplicant-wlan0.conf");
    let network =
        "\n[network]\nwifi_ssid = \"Bob's Garage\"\nwifi_passphrase = \"tow truck 42\"\nwifi_country = \"US\"\n";
    write(&boot.join("callbox.toml"), &format!("{GOOD}{network}"));
    let out = firstboot(&boot, &etc);
    assert!(text(&out).contains("Wi-Fi configured"), "{}", text(&out));
    assert_eq!(fs::metadata(&wifi).unwrap().mode() & 0o777, 0o600);
    let conf = fs::read_to_string(&wifi).unwrap();
    assert!(conf.contains("country=US") && conf.contains("ssid=426f622773204761726167"), "{conf}");
    assert!(!conf.contains("tow truck"), "{conf}");
    write(&boot.join("callbox.toml"), GOOD);
    let out = firstboot(&boot, &etc);
    assert!(out.status.success());
    assert!(!wifi.exists(), "{}", text(&out));

    // No config anywhere: says where to put one.
    let (boot2, etc2) = (dir.path().join("boot2"), dir.path().join("etc2"));
    fs::create_dir_all(&boot2).unwrap();
    let out = firstboot(&boot2, &etc2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("put callbox.toml on the SD card's boot partition"));
    assert!(!etc2.join("callbox.toml").exists());
}
