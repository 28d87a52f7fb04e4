#!/usr/bin/env bash
# Builds a flashable Raspberry Pi SD card image (arm64: Pi 3, 4, Zero 2 W) with the callbox
# service, without loop mounts and without containers:
#   debootstrap (first stage) -> second stage and apt in a chroot through qemu-user binfmt
#   -> kernel + firmware (cached as a tarball) -> callbox overlay -> FAT boot partition
#   (mkfs.vfat + mcopy) and ext4 root (mkfs.ext4 -d) -> sfdisk partition table -> dd into one .img
#
#   sudo image/build-image.sh [options]
#
# Options:
#   --binary PATH        the aarch64 callbox binary (default: build it with image/cross-build.sh)
#   --out FILE           the image to write (default: target/image/callbox-<base>-<suite>-arm64.img)
#   --base debian        Debian's archive with Debian's raspi-firmware and linux-image-arm64 (the
#                        default: builds anywhere Debian's archive is reachable)
#   --base raspios       Raspberry Pi OS's archive (archive.raspberrypi.com) on top of Debian, with
#                        its firmware and kernels (linux-image-rpi-v8, -rpi-2712: Pi 5, /dev/gpiomem).
#                        Needs that archive reachable and its keyring on the build machine
#                        (--raspios-keyring, default /usr/share/keyrings/raspberrypi-archive-keyring.gpg).
#   --suite NAME         Debian suite (default: trixie, Debian 13; bookworm still builds)
#   --mirror URL         Debian mirror for the build (default: the first deb.debian.org-style URI in
#                        this machine's apt sources, else http://deb.debian.org/debian). The image
#                        itself always gets http://deb.debian.org/debian in its sources.
#   --cache-dir DIR      where the prepared rootfs tarball is kept (default: $CALLBOX_IMAGE_CACHE,
#                        else target/image-cache). Delete it, or pass --rebuild-rootfs, to start over.
#   --rebuild-rootfs     ignore the cached rootfs
#   --rootfs-only        only prepare (and cache) the rootfs: no binary needed, no image written
#   --assemble-only DIR  skip debootstrap: take DIR as the prepared rootfs (its /boot/firmware becomes
#                        the boot partition), apply the callbox overlay and assemble. No chroot, no
#                        emulation; used by tests/image_scripts.rs on a tiny fake rootfs.
#   --boot-mib N         size of the FAT boot partition (default 256)
#   --keep-work          keep the work directory (printed) for inspection
#
# Needs root (debootstrap, chroot, file owners in the image) and, from Debian: debootstrap,
# qemu-user-static, dosfstools, mtools, fdisk, e2fsprogs, zstd. Prints the image path on the
# last line. A first build takes about 15 minutes (mostly the initramfs under emulation); a
# rebuild with the cached rootfs takes seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

base=debian
suite=trixie
mirror=""
binary=""
out=""
cache_dir="${CALLBOX_IMAGE_CACHE:-$repo/target/image-cache}"
rebuild=0
rootfs_only=0
assemble_only=""
boot_mib=256
keep_work=0
raspios_keyring=/usr/share/keyrings/raspberrypi-archive-keyring.gpg

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

while (($#)); do
    case "$1" in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --out) out=${2:?--out needs a file}; shift 2 ;;
        --base) base=${2:?--base needs debian or raspios}; shift 2 ;;
        --suite) suite=${2:?--suite needs a name}; shift 2 ;;
        --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
        --cache-dir) cache_dir=${2:?--cache-dir needs a directory}; shift 2 ;;
        --rebuild-rootfs) rebuild=1; shift ;;
        --rootfs-only) rootfs_only=1; shift ;;
        --assemble-only) assemble_only=${2:?--assemble-only needs a rootfs directory}; shift 2 ;;
        --boot-mib) boot_mib=${2:?--boot-mib needs a number}; shift 2 ;;
        --raspios-keyring) raspios_keyring=${2:?--raspios-keyring needs a file}; shift 2 ;;
        --keep-work) keep_work=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$base" in debian | raspios) ;; *) die "--base must be debian or raspios, not $base" ;; esac
if ! [[ "$boot_mib" =~ ^[0-9]+$ ]] || ((boot_mib < 64)); then die "--boot-mib must be a number >= 64"; fi
((EUID == 0)) || die "run as root: debootstrap, chroot and the file owners inside the image need it"
for tool in mkfs.vfat mcopy mmd sfdisk mkfs.ext4 dd; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install dosfstools mtools fdisk e2fsprogs)"
done
[[ -n "$out" ]] || out="$repo/target/image/callbox-$base-$suite-arm64.img"

# Packages of the cached rootfs. Changing this list (or the steps in prepare_rootfs) changes the
# cache key, so the next build starts from debootstrap again.
# - unattended-upgrades + needrestart: security updates on their own, services restarted after;
# - cloud-guest-utils (growpart): the root partition grows to the card at first boot;
# - wpasupplicant, firmware-brcm80211, wireless-regdb: Wi-Fi on the Pi 3/4/Zero 2 W chips;
# - gpiod: gpioinfo/gpioget, so an installer (and the boot test) can see the LED lines.
# trixie renamed libasound2 for the 64-bit time_t transition.
case "$suite" in
    bookworm | bullseye) libasound=libasound2 ;;
    *) libasound=libasound2t64 ;;
esac
base_packages=(systemd-sysv udev kmod iproute2 netbase ca-certificates dbus "$libasound"
    systemd-timesyncd systemd-resolved openssh-server initramfs-tools zstd e2fsprogs fdisk
    unattended-upgrades needrestart cloud-guest-utils wpasupplicant firmware-brcm80211
    wireless-regdb gpiod)
case "$base" in
    debian) boot_packages=(linux-image-arm64 raspi-firmware) ;;
    raspios) boot_packages=(raspi-firmware linux-image-rpi-v8 linux-image-rpi-2712) ;;
esac
rootfs_recipe=4 # bump when prepare_rootfs changes in a way the package list does not show

work=$(mktemp -d "${TMPDIR:-/tmp}/callbox-image.XXXXXX")
chroot_mounts=()
binfmt_registered=0
binfmt_mounted=0

cleanup() {
    local i
    for ((i = ${#chroot_mounts[@]} - 1; i >= 0; i--)); do
        umount -l "${chroot_mounts[i]}" 2>/dev/null || true
    done
    if ((binfmt_registered)); then echo -1 >/proc/sys/fs/binfmt_misc/qemu-aarch64 || true; fi
    if ((binfmt_mounted)); then umount /proc/sys/fs/binfmt_misc || true; fi
    if ((keep_work)); then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- qemu-user through binfmt_misc (not on by default here or in CI; undone on exit) -------------
enable_binfmt() {
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -r "$conf" ]] || die "$conf is missing (apt-get install qemu-user-static)"
    if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        binfmt_mounted=1
    fi
    if [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
        # Someone else registered it: use theirs and leave it in place.
        grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt is registered but disabled"
    else
        # The F flag opens the interpreter now, so it works inside the chroot without a copy.
        tr -d '\n' <"$conf" >/proc/sys/fs/binfmt_misc/register
        binfmt_registered=1
    fi
}

mount_chroot() {
    local root=$1
    mount -t proc proc "$root/proc" && chroot_mounts+=("$root/proc")
    mount -t sysfs sysfs "$root/sys" && chroot_mounts+=("$root/sys")
    mount --bind /dev "$root/dev" && chroot_mounts+=("$root/dev")
    mount --bind /dev/pts "$root/dev/pts" && chroot_mounts+=("$root/dev/pts")
}

umount_chroot() {
    local i
    for ((i = ${#chroot_mounts[@]} - 1; i >= 0; i--)); do umount "${chroot_mounts[i]}"; done
    chroot_mounts=()
}

in_chroot() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        LC_ALL=C.UTF-8 "$@"
}

apt_in_chroot() {
    in_chroot apt-get -o DPkg::Options::=--force-confold -o DPkg::Options::=--force-confdef \
        -o APT::Install-Recommends=false -y -q "$@"
}

detect_mirror() {
    local uri
    uri=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null |
        grep -oE 'https?://[^ ]+' | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

write_sources() {
    local root=$1 url=$2 security=$3
    cat >"$root/etc/apt/sources.list" <<EOF
deb $url $suite main non-free-firmware
deb $url $suite-updates main non-free-firmware
deb $security $suite-security main non-free-firmware
EOF
    if [[ "$base" == raspios ]]; then
        install -D -m 0644 "$raspios_keyring" "$root/usr/share/keyrings/raspberrypi-archive-keyring.gpg"
        echo "deb [signed-by=/usr/share/keyrings/raspberrypi-archive-keyring.gpg] http://archive.raspberrypi.com/debian $suite main" \
            >"$root/etc/apt/sources.list.d/raspi.list"
    fi
}

# apt inside the chroot resolves names with the build machine's resolver.
host_resolver() {
    rm -f "$1/etc/resolv.conf"
    cp -L /etc/resolv.conf "$1/etc/resolv.conf"
}

# --- stage 1: the prepared rootfs (debootstrap, packages, kernel, firmware), cached -------------
prepare_rootfs() {
    local root=$1 t0=$SECONDS
    [[ -n "$mirror" ]] || mirror=$(detect_mirror)
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    if [[ "$base" == raspios ]]; then
        [[ -r "$raspios_keyring" ]] || die "--base raspios needs the Raspberry Pi archive keyring ($raspios_keyring)"
        curl -fsS -m 20 -o /dev/null "http://archive.raspberrypi.com/debian/dists/$suite/Release" ||
            die "--base raspios: archive.raspberrypi.com is not reachable from this machine; use --base debian"
    fi
    log "debootstrap first stage from $mirror ($suite, arm64)"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=systemd-sysv,udev,kmod \
        "$suite" "$root" "$mirror" >&2
    enable_binfmt
    log "debootstrap second stage (qemu-user) after $((SECONDS - t0)) s"
    chroot "$root" /debootstrap/debootstrap --second-stage >&2

    write_sources "$root" "$mirror" "${mirror%/debian*}/debian-security"
    # No daemon may start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    host_resolver "$root"
    mount_chroot "$root"
    log "apt: base packages after $((SECONDS - t0)) s"
    apt_in_chroot update
    apt_in_chroot upgrade >&2
    apt_in_chroot install "${base_packages[@]}" >&2
    # systemd-resolved just pointed resolv.conf at its (not running) stub.
    host_resolver "$root"

    # The kernel's own hook builds the initrd once (update-initramfs -c); without this, the
    # initramfs trigger would build it a second time (-u), about 6 minutes each under emulation.
    sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$root/etc/initramfs-tools/update-initramfs.conf"
    mkdir -p "$root/boot/firmware"
    # raspi-firmware writes cmdline.txt from this: root by label, so the card works in any slot.
    cat >"$root/etc/default/raspi-firmware" <<'EOF'
# Used by raspi-firmware's hooks to write /boot/firmware/cmdline.txt on each kernel update.
ROOTPART=LABEL=rootfs
EOF
    log "apt: kernel and firmware (${boot_packages[*]}) after $((SECONDS - t0)) s"
    apt_in_chroot install "${boot_packages[@]}" >&2
    sed -i 's/^update_initramfs=.*/update_initramfs=yes/' "$root/etc/initramfs-tools/update-initramfs.conf"
    ls "$root"/boot/firmware/initrd.img* >/dev/null 2>&1 || die "no initrd in /boot/firmware after the kernel install"

    in_chroot systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service >&2
    apt_in_chroot clean
    umount_chroot
    rm -f "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/lib/apt/lists/* "$root/debootstrap"
    # systemd-resolved's stub; the build used the host's resolver.
    ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
    write_sources "$root" http://deb.debian.org/debian http://deb.debian.org/debian-security
    log "rootfs prepared in $((SECONDS - t0)) s"
}

rootfs_tarball() {
    local key
    key=$(printf '%s\n' "$rootfs_recipe" "$base" "$suite" "${base_packages[@]}" "${boot_packages[@]}" |
        sha256sum | cut -c1-12)
    echo "$cache_dir/rootfs-$base-$suite-arm64-$key.tar.zst"
}

cache_rootfs() {
    local root=$1 tarball=$2
    mkdir -p "$cache_dir"
    log "caching the rootfs as $tarball"
    tar --numeric-owner --xattrs --acls -C "$root" -I 'zstd -T0 -3' -cf "$tarball.part" .
    mv -f "$tarball.part" "$tarball"
}

# --- stage 2: the callbox overlay (no chroot: works on any rootfs directory) -------------------
apply_overlay() {
    local root=$1
    log "overlay: callbox binary, units, first-boot import, users, network, ssh off"
    install -D -m 0755 "$binary" "$root/usr/bin/callbox"
    install -D -m 0644 "$repo/systemd/callbox.service" "$root/usr/lib/systemd/system/callbox.service"
    install -D -m 0644 "$repo/systemd/callbox.socket" "$root/usr/lib/systemd/system/callbox.socket"
    install -D -m 0644 "$repo/systemd/udev/60-callbox-gpio.rules" "$root/usr/lib/udev/rules.d/60-callbox-gpio.rules"
    install -D -m 0644 "$here/callbox.toml.template" "$root/usr/share/callbox/callbox.toml.example"
    install -D -m 0644 "$here/rootfs/callbox-firstboot.service" "$root/usr/lib/systemd/system/callbox-firstboot.service"
    install -D -m 0755 "$here/rootfs/callbox-firstboot" "$root/usr/libexec/callbox/callbox-firstboot"
    install -D -m 0644 "$here/rootfs/callbox-card.path" "$root/usr/lib/systemd/system/callbox-card.path"
    install -D -m 0644 "$here/rootfs/callbox-reimport.service" "$root/usr/lib/systemd/system/callbox-reimport.service"
    install -D -m 0644 "$here/rootfs/callbox-status.service" "$root/usr/lib/systemd/system/callbox-status.service"
    install -D -m 0644 "$here/rootfs/callbox-ssh.service" "$root/usr/lib/systemd/system/callbox-ssh.service"
    install -D -m 0644 "$here/rootfs/callbox-growroot.service" "$root/usr/lib/systemd/system/callbox-growroot.service"
    install -D -m 0755 "$here/rootfs/callbox-growroot" "$root/usr/libexec/callbox/callbox-growroot"
    install -D -m 0644 "$here/rootfs/20-wired.network" "$root/etc/systemd/network/20-wired.network"
    install -D -m 0644 "$here/rootfs/25-wireless.network" "$root/etc/systemd/network/25-wireless.network"
    install -D -m 0644 "$here/rootfs/resolved-mdns.conf" "$root/etc/systemd/resolved.conf.d/callbox-mdns.conf"
    install -D -m 0644 "$here/rootfs/wpa_supplicant-callbox.conf" \
        "$root/etc/systemd/system/wpa_supplicant@.service.d/callbox.conf"
    install -D -m 0644 "$here/rootfs/70-callbox-wifi.rules" "$root/usr/lib/udev/rules.d/70-callbox-wifi.rules"
    install -D -m 0644 "$here/rootfs/20auto-upgrades" "$root/etc/apt/apt.conf.d/20auto-upgrades"
    install -D -m 0644 "$here/rootfs/52callbox-unattended-upgrades" "$root/etc/apt/apt.conf.d/52callbox-unattended-upgrades"
    install -D -m 0644 "$here/rootfs/needrestart-callbox.conf" "$root/etc/needrestart/conf.d/callbox.conf"
    install -D -m 0644 "$here/rootfs/sshd-callbox.conf" "$root/etc/ssh/sshd_config.d/callbox.conf"
    install -D -m 0644 "$here/rootfs/fstab" "$root/etc/fstab"
    install -d -m 0755 "$root/etc/callbox" "$root/boot/firmware"
    echo callbox >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tcallbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

    # The same accounts as image/deb/postinst: the gpio group Raspberry Pi OS uses for
    # /dev/gpiomem (SupplementaryGroups= fails on a missing group) and the service user.
    grep -q '^gpio:' "$root/etc/group" || groupadd --prefix "$root" --system gpio
    grep -q '^callbox:' "$root/etc/group" || groupadd --prefix "$root" --system callbox
    grep -q '^callbox:' "$root/etc/passwd" ||
        useradd --prefix "$root" --system --gid callbox --groups audio,gpio --home-dir /var/lib/callbox \
            --no-create-home --shell /usr/sbin/nologin --comment "callbox call box" callbox
    # No default passwords: root is locked (SSH, when the owner enables it, is key-only).
    usermod --prefix "$root" --lock root >/dev/null

    # Enabled the way `systemctl enable` would, from the units' [Install] sections.
    local sd=/usr/lib/systemd/system etc="$root/etc/systemd/system"
    mkdir -p "$etc/sockets.target.wants" "$etc/multi-user.target.wants" "$etc/callbox.service.wants"
    ln -sfn "$sd/callbox.socket" "$etc/sockets.target.wants/callbox.socket"
    ln -sfn "$sd/callbox.service" "$etc/multi-user.target.wants/callbox.service"
    ln -sfn "$sd/callbox-firstboot.service" "$etc/multi-user.target.wants/callbox-firstboot.service"
    ln -sfn "$sd/callbox-firstboot.service" "$etc/callbox.service.wants/callbox-firstboot.service"
    ln -sfn "$sd/callbox-card.path" "$etc/multi-user.target.wants/callbox-card.path"
    ln -sfn "$sd/callbox-ssh.service" "$etc/multi-user.target.wants/callbox-ssh.service"
    ln -sfn "$sd/callbox-growroot.service" "$etc/multi-user.target.wants/callbox-growroot.service"
    ln -sfn "$sd/callbox-status.service" "$etc/callbox.service.wants/callbox-status.service"

    # SSH stays off until the owner puts authorized_keys on the boot partition (callbox-ssh
    # then makes a host key and enables it). Host keys made at build time would be shared by
    # every card, so none ship.
    rm -f "$etc/multi-user.target.wants/ssh.service" "$etc/sshd.service" "$etc/sockets.target.wants/ssh.socket"
    rm -f "$root"/etc/ssh/ssh_host_*
    # trixie's sshd-keygen.service runs `ssh-keygen -A` (RSA too: 30 s under emulation) before
    # the first sshd; callbox-ssh makes the one ed25519 key sshd is configured for.
    ln -sfn /dev/null "$etc/sshd-keygen.service"
    # Early-boot helpers the box has no use for, each a process start on the way to serving
    # (3 to 7 s each in systemd-analyze blame of an emulated first boot, all competing for the
    # same cores): networkd files from the kernel command line (the card has its own), udev
    # rules from system credentials (none are passed), the DRM module ahead of logind (no
    # seat; on a Pi udev still loads the HDMI driver when it finds the hardware), EFI pstore
    # (a Pi has no EFI), configfs and FUSE with their mounts, binfmt_misc, huge pages.
    for unit in $early_boot_masked; do
        ln -sfn /dev/null "$etc/$unit"
    done
    # The phone line first while the box boots: at start-up every unit competes for the same
    # cores, and the path to answering (udev finding the boot partition, its fsck and mount,
    # the import, the socket's check, callbox itself) gets ten times the others' share.
    # StartupCPUWeight= applies only until the boot is finished.
    for unit in systemd-udevd.service systemd-fsck@.service boot-firmware.mount callbox-firstboot.service \
        callbox.socket callbox.service; do
        mkdir -p "$etc/$unit.d"
        printf '# callbox image: the path to answering calls first while booting.\n[%s]\nStartupCPUWeight=1000\n' \
            "$(unit_section "$unit")" >"$etc/$unit.d/50-callbox-boot-first.conf"
    done

    # Units the box does not need at boot: the D-Bus wpa_supplicant (wpa_supplicant@wlan0 is
    # the one used) and e2scrub_reap (LVM snapshots; the card has no LVM).
    rm -f "$etc/multi-user.target.wants/wpa_supplicant.service" "$etc/dbus-fi.w1.wpa_supplicant1.service" \
        "$etc/default.target.wants/e2scrub_reap.service" "$etc/multi-user.target.wants/e2scrub_reap.service"

    # The packages' first-run work (ldconfig, the journal catalog, system users) was done when
    # they were installed; without these stamps ConditionNeedsUpdate= redoes it on the card's
    # first boot, on the way to serving. Written last, so they are newer than /usr.
    mkdir -p "$root/var"
    touch "$root/etc/.updated" "$root/var/.updated"

    # Per-box identity is made at first boot.
    if [[ -e "$root/etc/machine-id" ]]; then : >"$root/etc/machine-id"; fi
    rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
}

# Units masked on the card (see apply_overlay); check-image.sh checks the same list.
early_boot_masked="systemd-network-generator.service systemd-udev-load-credentials.service modprobe@drm.service
    modprobe@efi_pstore.service modprobe@configfs.service modprobe@fuse.service sys-kernel-config.mount
    sys-fs-fuse-connections.mount systemd-binfmt.service dev-hugepages.mount"

# The section of a unit file that takes cgroup settings such as StartupCPUWeight=.
unit_section() {
    case "$1" in
        *.mount) echo Mount ;;
        *.socket) echo Socket ;;
        *) echo Service ;;
    esac
}

# --- stage 3: assembly (no mounts) ---------------------------------------------------------------
assemble() {
    local root=$1 bootfs=$2 img=$3
    local boot_sectors=$((boot_mib * 2048)) boot_start=8192
    local root_start=$((boot_start + boot_sectors))
    local used_mib root_mib
    used_mib=$(du -sm --apparent-size "$root" | cut -f1)
    # Room for the call log and kernel updates.
    root_mib=$((used_mib * 13 / 10 + 256))

    log "assemble: boot ${boot_mib} MiB FAT32, root ${root_mib} MiB ext4 (${used_mib} MiB used)"
    rm -f "$work/boot.vfat" "$work/root.ext4"
    mkfs.vfat -C -F 32 -n BOOT "$work/boot.vfat" $((boot_mib * 1024)) >/dev/null
    if compgen -G "$bootfs/*" >/dev/null; then mcopy -s -p -Q -i "$work/boot.vfat" "$bootfs"/* ::/; fi
    mkfs.ext4 -q -F -L rootfs -E root_owner=0:0 -d "$root" "$work/root.ext4" "${root_mib}M" >&2

    mkdir -p "$(dirname "$img")"
    rm -f "$img"
    truncate -s $(((root_start / 2048 + root_mib) * 1024 * 1024)) "$img"
    sfdisk --quiet "$img" <<EOF
label: dos
start=$boot_start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$((root_mib * 2048)), type=83
EOF
    dd if="$work/boot.vfat" of="$img" bs=1M seek=$((boot_start / 2048)) conv=notrunc,sparse status=none
    dd if="$work/root.ext4" of="$img" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
}

# --- main ----------------------------------------------------------------------------------------
t_start=$SECONDS
if ((rootfs_only)); then
    [[ -z "$assemble_only" ]] || die "--rootfs-only and --assemble-only exclude each other"
    tarball=$(rootfs_tarball)
    if ((rebuild)) || [[ ! -f "$tarball" ]]; then
        root="$work/rootfs"
        mkdir -p "$root"
        prepare_rootfs "$root"
        cache_rootfs "$root" "$tarball"
    else
        log "the rootfs is cached already: $tarball"
    fi
    echo "$tarball"
    exit 0
fi
if [[ -z "$binary" ]]; then
    log "no --binary: cross-building it (image/cross-build.sh)"
    binary="$repo/$("$here/cross-build.sh" | tail -n 1)"
fi
[[ -f "$binary" ]] || die "binary $binary not found"
[[ "$(od -An -tx1 -j18 -N2 "$binary" | tr -d ' ')" == b700 ]] || die "$binary is not an aarch64 ELF binary"

root="$work/rootfs"
mkdir -p "$root"
if [[ -n "$assemble_only" ]]; then
    [[ -d "$assemble_only" ]] || die "--assemble-only: $assemble_only is not a directory"
    cp -a "$assemble_only/." "$root/"
else
    tarball=$(rootfs_tarball)
    if ((rebuild)) || [[ ! -f "$tarball" ]]; then
        prepare_rootfs "$root"
        cache_rootfs "$root" "$tarball"
    else
        log "using the cached rootfs $tarball"
        tar --numeric-owner --xattrs --acls -C "$root" -I zstd -xpf "$tarball"
    fi
fi

apply_overlay "$root"

# The boot partition is /boot/firmware's content; the mount point stays, empty, in the rootfs.
bootfs="$work/bootfs"
mkdir -p "$bootfs"
if compgen -G "$root/boot/firmware/*" >/dev/null; then mv "$root"/boot/firmware/* "$bootfs/"; fi
# The owner's file: edited from any PC, imported by callbox-firstboot at every boot.
install -m 0644 "$here/callbox.toml.template" "$bootfs/callbox.toml"
cp "$here/rootfs/README-boot.txt" "$bootfs/README-callbox.txt"

assemble "$root" "$bootfs" "$out"
log "done in $((SECONDS - t_start)) s: $out ($(du -h --apparent-size "$out" | cut -f1) apparent, $(du -h "$out" | cut -f1) on disk)"
echo "$out"
