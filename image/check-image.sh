#!/usr/bin/env bash
# SC2317: the helpers are called through check(); SC2016: `bash -c '...' _ "$x"` is on purpose.
# shellcheck disable=SC2317,SC2016
# Inspects a built callbox SD card image without mounting anything: the partition table
# (sfdisk), the FAT boot partition (mtools) and the ext4 root (debugfs on a sparse copy of the
# partition). Prints one line per check and exits 1 with the failed checks listed if any fails.
#
#   image/check-image.sh IMAGE
#
# Checks: MBR with a bootable FAT32 partition labelled BOOT and an ext4 partition labelled
# rootfs; boot files (config.txt and the kernel and initrd it names, Pi firmware, device trees,
# cmdline.txt with root=LABEL=rootfs) and the owner's callbox.toml and readme; /usr/bin/callbox
# (an aarch64 ELF), callbox.socket, callbox.service, callbox-firstboot, -ssh, -status and
# -growroot present and enabled; growpart, the gpiochip udev rule, Wi-Fi (wpa_supplicant,
# brcmfmac firmware), mDNS in resolved, unattended-upgrades on for Debian-Security; the
# callbox user and gpio group; systemd-timesyncd enabled; no account with a usable or empty
# password; sshd not enabled, no host keys and no machine-id baked in.
# Needs: fdisk (sfdisk), mtools, e2fsprogs (debugfs, e2fsck), dosfstools (fsck.fat).
set -euo pipefail

if (($# != 1)) || [[ "$1" == -* ]]; then
    sed -n '4,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
img=$1
[[ -f "$img" ]] || { echo "check-image: $img: no such file" >&2; exit 2; }
for tool in sfdisk mdir mtype mlabel debugfs e2fsck fsck.fat; do
    command -v "$tool" >/dev/null || { echo "check-image: $tool is missing (apt-get install fdisk mtools e2fsprogs dosfstools)" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=()
ok() { echo "ok:   $*"; }
fail() { echo "FAIL: $*"; failures+=("$*"); }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
finish() {
    if ((${#failures[@]})); then
        echo "check-image: $img: ${#failures[@]} check(s) failed:" >&2
        printf '  - %s\n' "${failures[@]}" >&2
        exit 1
    fi
    echo "check-image: $img: all checks passed"
    exit 0
}

# --- partition table -----------------------------------------------------------------------------
table=$(sfdisk -d "$img" 2>/dev/null || true)
part() { # part N FIELD -> value of FIELD (start, size, type) of partition N
    sed -n "s/^[^ ]*$1 : //p" <<<"$table" | tr ',' '\n' | sed -n "s/^ *$2= *//p"
}
if ! grep -q '^label: dos' <<<"$table"; then
    fail "an MBR (dos) partition table"
    finish
fi
ok "an MBR (dos) partition table"
boot_type=$(part 1 type) root_type=$(part 2 type)
check "partition 1 is FAT32 LBA (type c), got '${boot_type:-none}'" test "$boot_type" = c
check "partition 1 is marked bootable" grep -qE '^[^ ]*1 : .*bootable' <<<"$table"
check "partition 2 is Linux (type 83), got '${root_type:-none}'" test "$root_type" = 83
if [[ -z "$(part 1 start)" || -z "$(part 2 start)" ]]; then finish; fi
boot_off=$(($(part 1 start) * 512)) boot_len=$(($(part 1 size) * 512))
root_off=$(($(part 2 start) * 512)) root_len=$(($(part 2 size) * 512))
img_len=$(stat -c %s "$img")
check "both partitions lie inside the image" test $((root_off + root_len)) -le "$img_len" -a $((boot_off + boot_len)) -le "$root_off"

# --- FAT boot partition (mtools reads it in place) -----------------------------------------------
fat="$img@@$boot_off"
export MTOOLS_SKIP_CHECK=1
dd if="$img" of="$tmp/boot.vfat" bs=1M iflag=skip_bytes,count_bytes skip="$boot_off" count="$boot_len" conv=sparse status=none
check "boot partition passes fsck.fat -n" fsck.fat -n "$tmp/boot.vfat" >/dev/null 2>&1
check "boot partition is labelled BOOT (fstab mounts it by label)" grep -qE 'Volume label is BOOT *$' < <(mlabel -s -i "$fat" :: 2>/dev/null)
boot_files=$(mdir -b -i "$fat" ::/ 2>/dev/null | sed 's|^::/||' || true)
has_boot() { grep -qx "$1" <<<"$boot_files"; }
fat_text() { mtype -i "$fat" "::/$1" 2>/dev/null | tr -d '\r'; }
for f in config.txt cmdline.txt callbox.toml; do check "boot partition has $f" has_boot "$f"; done
config=$(fat_text config.txt || true)
kernel=$(sed -n 's/^kernel=//p' <<<"$config" | tail -n 1)
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' <<<"$config" | tail -n 1)
check "config.txt names a kernel (${kernel:-none}) that is on the boot partition" has_boot "${kernel:-missing}"
check "config.txt names an initramfs (${initrd:-none}) that is on the boot partition" has_boot "${initrd:-missing}"
check "config.txt selects 64-bit mode (arm_64bit=1)" grep -qx 'arm_64bit=1' <<<"$config"
check "boot partition has the Pi 4 firmware (start4.elf, fixup4.dat)" bash -c 'grep -qx start4.elf <<<"$1" && grep -qx fixup4.dat <<<"$1"' _ "$boot_files"
check "boot partition has Raspberry Pi device trees (bcm27*.dtb)" grep -q '^bcm27.*\.dtb$' <<<"$boot_files"
check "cmdline.txt mounts the root by label (root=LABEL=rootfs)" grep -q 'root=LABEL=rootfs' < <(fat_text cmdline.txt)
check "callbox.toml on the boot partition is a callbox config (public_url, [twilio], [admin])" \
    bash -c 'grep -q "^public_url" <<<"$1" && grep -q "^\[twilio\]" <<<"$1" && grep -q "^\[admin\]" <<<"$1"' _ "$(fat_text callbox.toml)"

# --- ext4 root (debugfs on a sparse copy: no mount) ----------------------------------------------
rootfs="$tmp/root.ext4"
dd if="$img" of="$rootfs" bs=1M iflag=skip_bytes,count_bytes skip="$root_off" count="$root_len" conv=sparse status=none
if ! e2fsck -fn "$rootfs" >"$tmp/e2fsck.log" 2>&1; then
    fail "root partition passes e2fsck -fn ($(tail -n 1 "$tmp/e2fsck.log"))"
    finish
fi
ok "root partition passes e2fsck -fn"
dfs() { debugfs -R "$1" "$rootfs" 2>/dev/null; }
check "root partition is labelled rootfs (cmdline.txt and fstab use the label)" grep -q 'volume name: *rootfs$' < <(dfs stats)
ftype() { dfs "stat \"$1\"" | sed -n 's/.*Type: \([a-z]*\).*/\1/p' | head -n 1; }
file_is() { [[ "$(ftype "$1")" == "$2" ]]; }
cat_file() { dfs "cat \"$1\""; }
link_dest() {
    local dest
    dest=$(dfs "stat \"$1\"" | sed -n 's/^Fast link dest: "\(.*\)"$/\1/p')
    [[ -n "$dest" ]] || dest=$(cat_file "$1")
    echo "$dest"
}
enabled_as() { # enabled_as LINK UNIT: LINK is a symlink to the installed UNIT file
    local dest
    file_is "$1" symlink || return 1
    dest=$(link_dest "$1")
    [[ "$dest" == */"$2" ]] && file_is "$dest" regular
}

check "/usr/bin/callbox is a regular file" file_is /usr/bin/callbox regular
check "/usr/bin/callbox is executable" grep -qE 'Mode: +0?755' < <(dfs 'stat /usr/bin/callbox')
# ELF magic, 64-bit, little endian; e_machine (offset 18) 0xb7 = aarch64.
dfs "dump /usr/bin/callbox \"$tmp/callbox\"" >/dev/null
elf=$(od -An -tx1 -N20 "$tmp/callbox" 2>/dev/null | tr -d ' \n' || true)
check "/usr/bin/callbox is an aarch64 ELF binary" test "${elf:0:10}" = 7f454c4602 -a "${elf:36:4}" = b700
for u in callbox.service callbox.socket callbox-firstboot.service callbox-card.path callbox-reimport.service \
    callbox-ssh.service callbox-status.service callbox-growroot.service; do
    check "unit $u is installed" file_is "/usr/lib/systemd/system/$u" regular
done
check "first-boot script is installed and executable" grep -qE 'Mode: +0?755' < <(dfs 'stat /usr/libexec/callbox/callbox-firstboot')
wants=/etc/systemd/system
check "callbox.socket is enabled (sockets.target.wants)" enabled_as "$wants/sockets.target.wants/callbox.socket" callbox.socket
check "callbox.service is enabled (multi-user.target.wants)" enabled_as "$wants/multi-user.target.wants/callbox.service" callbox.service
check "callbox-firstboot.service is enabled (multi-user.target.wants)" \
    enabled_as "$wants/multi-user.target.wants/callbox-firstboot.service" callbox-firstboot.service
check "callbox-firstboot.service runs whenever callbox.service starts (callbox.service.wants)" \
    enabled_as "$wants/callbox.service.wants/callbox-firstboot.service" callbox-firstboot.service
check "callbox-card.path is enabled (multi-user.target.wants): a card fixed over SSH is re-imported" \
    enabled_as "$wants/multi-user.target.wants/callbox-card.path" callbox-card.path
check "callbox-ssh.service is enabled (multi-user.target.wants)" \
    enabled_as "$wants/multi-user.target.wants/callbox-ssh.service" callbox-ssh.service
check "callbox-growroot.service is enabled (multi-user.target.wants): the root grows to the card" \
    enabled_as "$wants/multi-user.target.wants/callbox-growroot.service" callbox-growroot.service
check "callbox-status.service runs whenever callbox.service starts (callbox.service.wants)" \
    enabled_as "$wants/callbox.service.wants/callbox-status.service" callbox-status.service
check "growpart (cloud-guest-utils) is installed" file_is /usr/bin/growpart regular
check "the udev rule giving group gpio /dev/gpiochip* is installed" file_is /usr/lib/udev/rules.d/60-callbox-gpio.rules regular
check "wpa_supplicant and the Pi's Wi-Fi firmware (brcmfmac) are installed" \
    bash -c '[[ -n "$1" && -n "$2" ]]' _ "$(ftype /usr/sbin/wpa_supplicant)" "$(dfs 'ls /usr/lib/firmware/brcm' | grep -o 'brcmfmac43455[^ ]*' | head -n 1)"
check "systemd-resolved answers mDNS (MulticastDNS=yes in resolved.conf.d and the .network files)" \
    bash -c 'grep -qx "MulticastDNS=yes" <<<"$1" && grep -qx "MulticastDNS=yes" <<<"$2"' _ \
    "$(cat_file /etc/systemd/resolved.conf.d/callbox-mdns.conf)" "$(cat_file /etc/systemd/network/20-wired.network)"
check "unattended-upgrades is installed, on, and limited to Debian-Security" \
    bash -c '[[ -n "$1" ]] && grep -q "Unattended-Upgrade \"1\"" <<<"$2" && grep -q "Debian-Security" <<<"$3"' _ \
    "$(ftype /usr/bin/unattended-upgrade)" "$(cat_file /etc/apt/apt.conf.d/20auto-upgrades)" \
    "$(cat_file /etc/apt/apt.conf.d/52callbox-unattended-upgrades)"
check "the boot partition's readme names CALLBOX-ERROR.txt and callbox-status.txt" \
    bash -c 'grep -q CALLBOX-ERROR.txt <<<"$1" && grep -q callbox-status.txt <<<"$1"' _ "$(fat_text README-callbox.txt)"
check "systemd-timesyncd is installed and enabled" \
    bash -c '[[ -n "$1" ]]' _ "$(dfs "ls -p $wants/sysinit.target.wants" | grep -F '/systemd-timesyncd.service/' || true)"
check "/usr/share/callbox/callbox.toml.example (the template) is installed" file_is /usr/share/callbox/callbox.toml.example regular
check "/boot/firmware exists as the boot partition's mount point" file_is /boot/firmware directory
check "/etc/fstab mounts LABEL=BOOT on /boot/firmware and LABEL=rootfs on /" \
    bash -c 'grep -qE "^LABEL=BOOT[[:space:]]+/boot/firmware[[:space:]]+vfat" <<<"$1" && grep -qE "^LABEL=rootfs[[:space:]]+/[[:space:]]" <<<"$1"' _ "$(cat_file /etc/fstab)"

passwd=$(cat_file /etc/passwd) group=$(cat_file /etc/group) shadow=$(cat_file /etc/shadow)
check "system user callbox exists" grep -q '^callbox:' <<<"$passwd"
check "group gpio exists" grep -q '^gpio:' <<<"$group"
member_of() { grep -qE "^$1:[^:]*:[^:]*:(.*,)?callbox(,|$)" <<<"$group"; }
check "callbox is in the audio group" member_of audio
check "callbox is in the gpio group" member_of gpio
root_pw=$(sed -n 's/^root:\([^:]*\):.*/\1/p' <<<"$shadow")
check "root's password is locked (shadow field '${root_pw:0:2}...')" bash -c '[[ "$1" == [!*]* ]]' _ "$root_pw"
usable=$(awk -F: '$2 == "" || $2 !~ /^[!*]/ { print $1 }' <<<"$shadow" | tr '\n' ' ')
check "no account has a usable or empty password${usable:+ (found: $usable)}" test -z "$usable"
check "/etc/shadow has entries (the check above read something)" test -n "$shadow"

ssh_links=$(for d in multi-user.target.wants sockets.target.wants; do dfs "ls -p $wants/$d"; done |
    awk -F/ '{ print $6 }' | grep -E '^sshd?\.(service|socket)$' || true)
check "sshd is not enabled${ssh_links:+ (found: $ssh_links)}" test -z "$ssh_links"
check "no sshd.service alias (left by 'systemctl enable ssh')" test -z "$(ftype "$wants/sshd.service")"
check "/etc/machine-id is empty (each box makes its own at first boot)" test -z "$(cat_file /etc/machine-id)"
for unit in sshd-keygen.service systemd-network-generator.service systemd-udev-load-credentials.service modprobe@drm.service \
    modprobe@efi_pstore.service modprobe@configfs.service modprobe@fuse.service sys-kernel-config.mount \
    sys-fs-fuse-connections.mount systemd-binfmt.service dev-hugepages.mount; do
    check "$unit is masked (not needed on the way to serving)" test "$(link_dest "$wants/$unit")" = /dev/null
done
for unit in systemd-udevd.service systemd-fsck@.service boot-firmware.mount callbox-firstboot.service callbox.socket callbox.service; do
    check "$unit gets the CPU first while booting (StartupCPUWeight=1000)" \
        grep -q '^StartupCPUWeight=1000$' < <(cat_file "$wants/$unit.d/50-callbox-boot-first.conf")
done
host_keys=$(dfs 'ls -p /etc/ssh' | awk -F/ '{ print $6 }' | grep '^ssh_host_' || true)
check "no SSH host keys baked into the image (each box makes its own)" test -z "$host_keys"

finish
