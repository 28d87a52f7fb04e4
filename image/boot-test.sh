#!/usr/bin/env bash
# Boots a built callbox SD image under qemu-system-aarch64 (-M virt) and checks, from the host,
# that first boot imported a callbox.toml put on the FAT boot partition and that the service
# answers through forwarded loopback ports (the time from power-on to serving is printed, in
# host seconds and in the guest's own clock):
#   - public listener (port 443 in the guest, from callbox.socket): GET /healthz -> 200
#   - admin listener (8080 in the guest): GET /healthz -> 200, GET /api/v1/health with the test
#     config's admin token -> 200 and without it -> 401 (so the running config is the one put
#     on the card, not the template)
#   - the guest's journal (forwarded to the serial console) shows the import line
#   - an authorized_keys file put on the card turns sshd on: key login as root works, password
#     login is not offered, and inside the box /etc/callbox/callbox.toml is root's, mode 0600;
#     one host key (ed25519) was made
#   - the card is written to a disk of --disk-gib (default 4): the root partition and its ext4
#     grew to fill it at first boot
#   - LEDs: the config puts them on lines of the virt board's PL061 GPIO controller through the
#     GPIO character device; gpioinfo and /sys/kernel/debug/gpio in the guest show the lines
#     held by consumer "callbox" and the ready LED's line high, then the message LED's after a
#     simulated call leaves a voicemail
#   - ring tone: the guest has a USB sound card (qemu-xhci + usb-audio) recorded by qemu's wav
#     backend; during the simulated call (callbox simulate-call from the host) it plays, and
#     examples/ring_in_wav.rs finds the configured frequencies and cadence in the recording
#   - Wi-Fi: [network] in the card's config became wpa_supplicant's file for wlan0 (0600, no
#     passphrase in it); with mac80211_hwsim radios and an access point on wlan1, wlan0 joins it
#   - callbox-status.txt on the boot partition names the guest's address, the dashboard at
#     callbox.local and both webhook URLs; systemd-resolved answers mDNS on the link
#   - unattended-upgrades is set to Debian's security archive and its timer is on
# Then, unless --good-only, boots again with a bad callbox.toml (a too-short admin token) and no
# authorized_keys, and checks the one journal line naming admin.token, that nothing answers,
# that systemd neither restarts callbox.service nor hits a start limit, and that sshd is off.
#
#   image/boot-test.sh [--good-only] [--timeout SECONDS] [--disk-gib N] [--machine M] [--keep] IMAGE
#
# --machine virt (default): qemu's generic board, 2 cores, virtio disk and network, USB sound.
# --machine raspi3b: qemu's Raspberry Pi 3 with the card's bcm2837-rpi-3-b.dtb, the card as its
#   SD card and USB networking, so the LEDs are BCM pins on the BCM2835 GPIO controller. The
#   ring is checked on virt only (USB sound on its xHCI); this board gets no sound card.
#
# The image itself is not changed: the test boots a sparse copy. The Pi's GPU boot path cannot
# be emulated, so the kernel and initrd named in the image's config.txt are taken off the FAT
# partition and passed to qemu directly; the rootfs, fstab, both partitions, udev, systemd and
# the units are the image's own. Needs: qemu-system-arm, mtools, fdisk, curl, openssh-client,
# and cargo (the host's callbox for simulate-call, and the WAV check). Each boot is bounded by
# --timeout (default 900 s) and qemu is stopped at the end.
set -euo pipefail

timeout_s=900
disk_gib=4
machine=virt
good_only=0
keep=0
img=""
while (($#)); do
    case "$1" in
        --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
        --good-only) good_only=1; shift ;;
        --disk-gib) disk_gib=${2:?--disk-gib needs a number}; shift 2 ;;
        --machine) machine=${2:?--machine needs virt or raspi3b}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "boot-test: unknown option $1" >&2; exit 2 ;;
        *) img=$1; shift ;;
    esac
done
log() { echo "boot-test: $*" >&2; }
[[ -n "$img" && -f "$img" ]] || { echo "boot-test: usage: image/boot-test.sh [--good-only] [--timeout S] IMAGE" >&2; exit 2; }
for tool in qemu-system-aarch64 mcopy mtype sfdisk curl ss ssh ssh-keygen cargo; do
    command -v "$tool" >/dev/null || { echo "boot-test: $tool is missing (apt-get install qemu-system-arm mtools fdisk curl iproute2 openssh-client; cargo from rustup)" >&2; exit 2; }
done
repo=$(cd "$(dirname "$0")/.." && pwd)
log "building the host's callbox (simulate-call) and the WAV check"
(cd "$repo" && cargo build --quiet --bin callbox --example ring_in_wav) >&2
host_callbox="$repo/target/debug/callbox"
ring_in_wav="$repo/target/debug/examples/ring_in_wav"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/boot-test.XXXXXX")
qemu_pid=""
stop_qemu() {
    # SIGTERM: qemu exits cleanly, so the wav backend writes its header.
    if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    qemu_pid=""
}
cleanup() {
    stop_qemu
    if ((keep)); then echo "boot-test: files kept in $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
failures=()
ok() { echo "ok:   $*"; }
fail() { echo "FAIL: $*"; failures+=("$*"); }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

table=$(sfdisk -d "$img")
boot_start=$(sed -n 's/^[^ ]*1 : start= *\([0-9]*\),.*/\1/p' <<<"$table")
image_root_mib=$(($(sed -n 's/^[^ ]*2 : start= *[0-9]*, size= *\([0-9]*\),.*/\1/p' <<<"$table") / 2048))
[[ -n "$boot_start" ]] || { echo "boot-test: $img has no first partition" >&2; exit 1; }
export MTOOLS_SKIP_CHECK=1
config=$(mtype -i "$img@@$((boot_start * 512))" ::/config.txt | tr -d '\r')
kernel=$(sed -n 's/^kernel=//p' <<<"$config" | tail -n 1)
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' <<<"$config" | tail -n 1)
[[ -n "$kernel" && -n "$initrd" ]] || { echo "boot-test: config.txt names no kernel or initramfs" >&2; exit 1; }
mcopy -i "$img@@$((boot_start * 512))" "::/$kernel" "$tmp/vmlinuz"
mcopy -i "$img@@$((boot_start * 512))" "::/$initrd" "$tmp/initrd.img"
case "$machine" in
    virt) ;;
    raspi3b) mcopy -i "$img@@$((boot_start * 512))" ::/bcm2837-rpi-3-b.dtb "$tmp/board.dtb" ;;
    *) echo "boot-test: --machine must be virt or raspi3b" >&2; exit 2 ;;
esac

free_port() {
    local p
    for _ in $(seq 200); do
        # Below Linux's ephemeral range (32768+), where outgoing connections take ports.
        p=$((20000 + RANDOM % 12000))
        [[ -z "$(ss -Htln "sport = :$p")" ]] && { echo "$p"; return; }
    done
    echo "boot-test: no free loopback port found" >&2
    exit 1
}

admin_token=boot-test-admin-token-0123456789
twilio_token=6d7fce9fee471194aa8b5b6e47267f03
public_url=https://callbox-boot-test.localdomain
if [[ "$machine" == virt ]]; then
    # The virt board's PL061 has 8 lines; line 3 is its power button (gpio-keys).
    gpio_label=9030000.pl061
    led_ready=0 led_incoming=1 led_active=2 led_message=4 led_fault=5
else
    # A Pi: the SoC's controller, BCM numbers as in callbox's defaults.
    gpio_label=pinctrl-bcm2835
    led_ready=17 led_incoming=27 led_active=22 led_message=23 led_fault=24
fi
# Not the default ring, so hearing it proves the config reached the speaker.
tone_freqs=620,940 tone_on_ms=400 tone_off_ms=200
wifi_ssid="Bob's Garage" wifi_pass="tow truck 42"
write_config() { # write_config FILE ADMIN_TOKEN
    cat >"$1" <<EOF
# boot-test.sh: test values only.
public_url = "$public_url"

[server]
listen = "0.0.0.0:443"

[admin]
listen = "0.0.0.0:8080"
token = "$2"

[twilio]
auth_token = "$twilio_token"

[storage]
dir = "/var/lib/callbox"

[tls]
mode = "off"

[indicators]
leds = "cdev"
gpio_chip = "$gpio_label"
ready = { pins = [$led_ready], pattern = "solid" }
incoming = { pins = [$led_incoming], pattern = "solid" }
active = { pins = [$led_active], pattern = "solid" }
message_waiting = { pins = [$led_message], pattern = "solid" }
fault = { pins = [$led_fault], pattern = "solid" }
max_ring_secs = 20
tone = { frequencies = [$tone_freqs], cadence_ms = [$tone_on_ms, $tone_off_ms], volume = 0.5 }

[network]
wifi_ssid = "$wifi_ssid"
wifi_passphrase = "$wifi_pass"
wifi_country = "US"
EOF
}

ssh-keygen -q -t ed25519 -N '' -C boot-test -f "$tmp/id_ed25519"
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10)

# boot NAME ADMIN_TOKEN [authorized_keys]: copies the image, puts the config (and SSH keys) on
# its FAT partition, starts qemu.
boot() {
    local name=$1 sd="$tmp/$1.img"
    log "$name: copying the image and putting a test callbox.toml on its boot partition"
    cp --sparse=always "$img" "$sd"
    # A card larger than the image, as every real one is.
    truncate -s "${disk_gib}G" "$sd"
    write_config "$tmp/$name.toml" "$2"
    mcopy -o -i "$sd@@$((boot_start * 512))" "$tmp/$name.toml" ::/callbox.toml
    if [[ -n "${3:-}" ]]; then mcopy -o -i "$sd@@$((boot_start * 512))" "$3" ::/authorized_keys; fi
    public_port=$(free_port)
    admin_port=$(free_port)
    ssh_port=$(free_port)
    console="$tmp/$name-console.log"
    log "$name: booting (public 127.0.0.1:$public_port -> 443, admin 127.0.0.1:$admin_port -> 8080; console $console)"
    local hostfwd="hostfwd=tcp:127.0.0.1:$public_port-:443,hostfwd=tcp:127.0.0.1:$admin_port-:8080,hostfwd=tcp:127.0.0.1:$ssh_port-:22"
    local cmdline="root=LABEL=rootfs rootwait ro console=ttyAMA0 systemd.journald.forward_to_console=1"
    # Every byte on the emulated serial port costs the guest CPU time, and the boot is timed:
    # the good boot puts only warnings there and is read through SSH (journalctl); the bad
    # one, which has no SSH, keeps it all (systemd's restart lines are notices).
    [[ "$name" != good ]] || cmdline+=" quiet loglevel=4 systemd.show_status=false systemd.journald.max_level_console=warning"
    local board
    case "$machine" in
        virt)
            board=(-M virt -cpu cortex-a72 -smp 2 -m 1024
                -drive "if=none,file=$sd,format=raw,id=hd0" -device "virtio-blk-pci,drive=hd0"
                -netdev "user,id=n0,$hostfwd" -device "virtio-net-pci,netdev=n0,romfile="
                -device qemu-xhci -device "usb-audio,audiodev=snd0"
                -audiodev "wav,id=snd0,path=$tmp/$name-speaker.wav")
            ;;
        raspi3b)
            # The Pi 3's own device tree from the card: BCM2835 GPIO, SD host, dwc2 USB.
            board=(-M raspi3b -dtb "$tmp/board.dtb" -drive "if=sd,file=$sd,format=raw"
                -netdev "user,id=n0,$hostfwd" -device "usb-net,netdev=n0")
            ;;
    esac
    timeout "$timeout_s" qemu-system-aarch64 "${board[@]}" \
        -kernel "$tmp/vmlinuz" -initrd "$tmp/initrd.img" -append "$cmdline" \
        -display none -monitor none -serial "file:$console" -no-reboot &
    qemu_pid=$!
    boot_t0=$SECONDS
    boot_cpu0=$(host_cpu)
}

# The host's CPU counters (all jiffies, and those stolen by a hypervisor), for how much of the
# host this boot really had: on a shared VM, steal time slows the emulated guest's clock-time.
host_cpu() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9 }' /proc/stat; }
stolen_percent() { # stolen_percent "TOTAL0 STEAL0": percent of host CPU time stolen since then
    read -r t0 s0 <<<"$1"
    read -r t1 s1 <<<"$(host_cpu)"
    echo $(((s1 - s0) * 100 / ((t1 - t0) > 0 ? (t1 - t0) : 1)))
}

# wait_for URL [CURL ARGS...]: polls until 200 or the boot's deadline; prints the seconds it took.
wait_for() {
    local url=$1
    shift
    while ((SECONDS - boot_t0 < timeout_s)); do
        kill -0 "$qemu_pid" 2>/dev/null || return 1
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$@" "$url" || true)" == 200 ]]; then
            echo $((SECONDS - boot_t0))
            return 0
        fi
        sleep 2
    done
    return 1
}
status_of() { curl -s -o /dev/null -w '%{http_code}' -m 10 "$@" || true; }
console_has() { grep -aq -- "$1" "$console"; }
# Read whole first: `grep -q` would close the pipe early, and pipefail would count that.
journal_has() {
    local journal
    journal=$(guest "journalctl -b -o cat --no-pager" 2>/dev/null || true)
    grep -aqF -- "$1" <<<"$journal"
}
no_restart() { ! grep -aq "callbox.service: Scheduled restart job" "$console"; }
no_start_limit() { ! grep -aq "start-limit-hit" "$console"; }
# The SSH banner through the forwarded port (empty when nothing listens in the guest).
# shellcheck disable=SC2016 # $1 expands in the inner bash
ssh_banner() { timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -c 7 <&3' _ "$ssh_port" 2>/dev/null || true; }
guest() { ssh "${ssh_opts[@]}" -o BatchMode=yes -i "$tmp/id_ed25519" -p "$ssh_port" root@127.0.0.1 "$@"; }

# --- good config ---------------------------------------------------------------------------------
boot good "$admin_token" "$tmp/id_ed25519.pub"
serving=0
if t=$(wait_for "http://127.0.0.1:$admin_port/healthz"); then
    serving=1
    ok "admin GET /healthz answered 200 from the host after ${t} s (guest booted, callbox.service running)"
    code=$(status_of "http://127.0.0.1:$public_port/healthz")
    check "public GET /healthz (port 443 from callbox.socket) answers 200 (got '$code')" test "$code" = 200
    code=$(status_of -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$admin_port/api/v1/health")
    check "admin API accepts the admin token from the card's callbox.toml (got '$code', want 200)" test "$code" = 200
    code=$(status_of "http://127.0.0.1:$admin_port/api/v1/health")
    check "admin API without a token answers 401 (got '$code')" test "$code" = 401
else
    fail "callbox did not answer GET /healthz within ${timeout_s} s or qemu stopped (see $console; use --keep)"
fi
mode=""
for _ in $(seq 30); do
    mode=$(guest "stat -c '%U:%G %a' /etc/callbox/callbox.toml" 2>/dev/null || true)
    [[ -n "$mode" ]] && break
    sleep 2
done
check "authorized_keys on the card turned sshd on: key login as root works" test -n "$mode"
check "first boot imported callbox.toml from the boot partition (journal)" \
    journal_has "imported /boot/firmware/callbox.toml into /etc/callbox/callbox.toml"
check "first boot validated the config ('is valid' in the journal)" journal_has "/etc/callbox/callbox.toml is valid"
banner=$(ssh_banner)
check "the SSH banner is readable through the forwarded port (got '$banner')" test "$banner" = SSH-2.0
check "inside the box /etc/callbox/callbox.toml is root:root 0600 (got '$mode')" test "$mode" = "root:root 600"
denied=$(ssh "${ssh_opts[@]}" -o BatchMode=yes -o PubkeyAuthentication=no -p "$ssh_port" root@127.0.0.1 true 2>&1 || true)
check "sshd offers no password login (got '${denied//$'\n'/ }')" grep -q 'Permission denied (publickey)' <<<"$denied"
keys=$(guest "cd /etc/ssh && ls ssh_host_*_key" 2>/dev/null | tr '\n' ' ' || true)
check "one SSH host key was made on the box, ed25519 (got '$keys')" test "$keys" = "ssh_host_ed25519_key "

if ((serving)) && [[ -n "$mode" ]]; then
    # Boot time in the guest's own clock: callbox.service active (READY=1), from the kernel's start.
    active_us=$(guest "systemctl show -P ActiveEnterTimestampMonotonic callbox.service" || echo 0)
    echo "measure: callbox.service ready at $((active_us / 1000)) ms of guest time; the host saw /healthz after ${t} s"
    echo "measure: the hypervisor stole $(stolen_percent "$boot_cpu0")% of this host's CPU time since power-on"
    echo "measure: $(guest "systemd-analyze time" 2>/dev/null | head -n 1)"
    guest "systemd-analyze critical-chain callbox.service" 2>/dev/null | sed -n "4,\$s/^/measure:   /p" || true
    # Where the kernel's part goes (the initrd's unpacking and its own udev run are in it).
    guest "dmesg" 2>/dev/null | grep -E "Unpacking initramfs|Freeing initrd memory|Run /init as init|systemd 2[0-9]{2}" |
        sed 's/^/measure: kernel /' || true
    guest "systemd-analyze blame --no-pager" 2>/dev/null | head -n 25 | sed 's/^/measure: blame /' || true
    guest "journalctl -b -o short-monotonic --no-pager -u callbox-firstboot.service -u callbox.socket -u callbox.service" \
        2>/dev/null | head -n 25 | sed 's/^/measure: journal /' || true

    # The card fills itself.
    for _ in $(seq 60); do
        [[ "$(guest "systemctl is-active callbox-growroot.service" || true)" == active ]] && break
        sleep 2
    done
    root_mib=$(guest "df -B1M --output=size / | tail -n 1" | tr -d ' ' || echo 0)
    check "the root filesystem grew to the ${disk_gib} GiB disk: ${root_mib} MiB (the image's root partition: ${image_root_mib} MiB)" \
        test "${root_mib:-0}" -gt $((disk_gib * 1024 - 512))
    check "callbox-growroot said so in the journal" journal_has "root filesystem grown from"

    # LEDs on the PL061's lines through /dev/gpiochip*, as the kernel sees them.
    gpio_level() { # gpio_level LINE: hi or lo, from debugfs
        guest "cat /sys/kernel/debug/gpio" | awk -v label="$gpio_label" -v line="$1" '
            /^gpiochip/ { mine = index($0, label) > 0; if (mine) { split($3, r, "-"); base = r[1] + 0 } next }
            mine && $1 == "gpio-" (base + line) { if (/ out hi/) print "hi"; else if (/ out lo/) print "lo"; else print "in"; exit }'
    }
    wait_level() { # wait_level LINE LEVEL: up to 30 s
        local level=""
        for _ in $(seq 15); do
            level=$(gpio_level "$1" || true)
            [[ "$level" == "$2" ]] && break
            sleep 2
        done
        echo "$level"
    }
    held=$(guest "gpioinfo" 2>/dev/null | grep -cE 'consumer="?callbox"?$' || true)
    check "gpioinfo: the 5 LED lines are held by consumer \"callbox\" (got $held)" test "$held" = 5
    check "the LEDs are on the character device (journal: 'LEDs on GPIO lines')" journal_has "LEDs on GPIO lines"
    level=$(wait_level "$led_ready" hi)
    check "ready LED (line $led_ready of $gpio_label) is high while idle (got '$level')" test "$level" = hi
    level=$(gpio_level "$led_message" || true)
    check "message LED (line $led_message) is low before any call (got '$level')" test "$level" = lo

    # A simulated call leaves a voicemail: the ring plays on the USB sound card, the message LED lights.
    sim=$("$host_callbox" simulate-call --url "http://127.0.0.1:$public_port" --public-url "$public_url" \
        --auth-token "$twilio_token" --ring-seconds 4 --seconds 5 --dtmf '#@4' 2>&1 | tail -n 3 || true)
    log "simulate-call: ${sim//$'\n'/ | }"
    check "a simulated call completed through the guest (simulate-call: '${sim##*$'\n'}')" grep -qi 'completed' <<<"$sim"
    level=$(wait_level "$led_message" hi)
    check "after the voicemail the message LED (line $led_message) is high (got '$level')" test "$level" = hi
    [[ "$machine" != virt ]] || check "the speaker was the USB sound card (journal: 'audio output found' or cpal at start)" \
        bash -c "grep -aq 'audio output found' <<<\"\$1\" || grep -aq 'speaker: cpal' <<<\"\$1\"" _ "$(guest "journalctl -b -u callbox -o cat --no-pager" 2>/dev/null)"

    # Wi-Fi: the file from [network], then a join with simulated radios.
    wmode=$(guest "stat -c '%a' /etc/wpa_supplicant/wpa_supplicant-wlan0.conf" || true)
    check "[network] became wpa_supplicant-wlan0.conf, mode 0600 (got '$wmode')" test "$wmode" = 600
    leaked=$(guest "grep -c 'tow truck' /etc/wpa_supplicant/wpa_supplicant-wlan0.conf" || true)
    check "the Wi-Fi passphrase itself is not on the root filesystem (got $leaked)" test "$leaked" = 0
    guest "modprobe mac80211_hwsim radios=2 && cat >/run/boot-test-ap.conf" <<EOF || true
ctrl_interface=/run/boot-test-ap
network={
    ssid="$wifi_ssid"
    mode=2
    frequency=2412
    key_mgmt=WPA-PSK
    proto=RSN
    pairwise=CCMP
    group=CCMP
    psk="$wifi_pass"
}
EOF
    joined=""
    for _ in $(seq 30); do
        # wlan0 came up from udev (70-callbox-wifi.rules); the access point goes on wlan1.
        # (A pid file, not pgrep -f: that would find this very command line.)
        guest "ip link show wlan1 >/dev/null 2>&1 && { [ -e /run/boot-test-ap.pid ] || wpa_supplicant -B -i wlan1 -c /run/boot-test-ap.conf -P /run/boot-test-ap.pid; }" >/dev/null 2>&1 || true
        joined=$(guest "wpa_cli -p /run/wpa_supplicant -i wlan0 status 2>/dev/null | grep -E '^(wpa_state|ssid)='" 2>/dev/null | tr '\n' ' ' || true)
        [[ "$joined" == *wpa_state=COMPLETED* ]] && break
        sleep 2
    done
    check "wpa_supplicant@wlan0 started by itself and joined the access point (got '$joined')" \
        grep -q "wpa_state=COMPLETED" <<<"$joined"

    # Found on the LAN: mDNS on the wired link, and the status file on the card.
    mdns=$(guest "resolvectl status" 2>/dev/null | grep -c '+mDNS' || true)
    check "systemd-resolved has mDNS on (links with +mDNS: $mdns)" test "${mdns:-0}" -ge 1
    listening=$(guest "ss -Hulpn 'sport = :5353'" 2>/dev/null | grep -c systemd-resolve || true)
    check "systemd-resolved listens on UDP 5353 (got $listening socket(s))" test "${listening:-0}" -ge 1
    status=""
    for _ in $(seq 15); do
        status=$(guest "cat /boot/firmware/callbox-status.txt" 2>/dev/null | tr -d '\r' || true)
        [[ -n "$status" ]] && break
        sleep 2
    done
    address=$(guest "ip -4 -o addr show scope global" 2>/dev/null | awk '{ sub("/.*", "", $4); print $4; exit }' || true)
    for want in "address $address" "http://callbox.local:8080/" "http://$address:8080/" \
        "$public_url/api/v1/webhooks/incoming-call" "$public_url/api/v1/webhooks/call-status"; do
        check "callbox-status.txt on the boot partition names '$want'" grep -qF -- "$want" <<<"$status"
    done

    # Security updates on their own.
    origins=$(guest "apt-config dump Unattended-Upgrade::Origins-Pattern" 2>/dev/null | grep -c '"origin=' || true)
    security=$(guest "apt-config dump Unattended-Upgrade::Origins-Pattern" 2>/dev/null | grep -c 'Debian-Security' || true)
    check "unattended-upgrades takes Debian's security archive only ($security of $origins origin patterns)" \
        test "${origins:-0}" -ge 1 -a "$origins" = "$security"
    timer=$(guest "systemctl is-enabled apt-daily-upgrade.timer" || true)
    check "the upgrade timer is enabled (got '$timer')" test "$timer" = enabled
fi
stop_qemu

# The ring, as the guest's USB sound card played it (qemu wrote the WAV as it went).
wav="$tmp/good-speaker.wav"
if [[ "$machine" != virt ]]; then
    log "no sound card given to the guest on $machine: the ring is checked on virt"
elif [[ -s "$wav" ]]; then
    if ring=$("$ring_in_wav" "$wav" --frequencies "$tone_freqs" --cadence "$tone_on_ms,$tone_off_ms" --tolerance-ms 80); then
        ok "the ring tone is in the USB sound card's output: ${ring##*$'\n'}"
    else
        fail "the ring tone is not in the USB sound card's output: ${ring//$'\n'/ | }"
    fi
else
    fail "qemu recorded nothing from the guest's USB sound card ($wav)"
fi

# --- bad config ----------------------------------------------------------------------------------
if ((!good_only)); then
    boot bad short
    line=""
    while ((SECONDS - boot_t0 < timeout_s)) && kill -0 "$qemu_pid" 2>/dev/null; do
        line=$(grep -a 'callbox.toml on the boot partition is not valid' "$console" 2>/dev/null | head -n 1 || true)
        [[ -n "$line" ]] && break
        sleep 2
    done
    if [[ -n "$line" ]]; then
        ok "bad config: one journal line after $((SECONDS - boot_t0)) s: ${line#*]: }"
        check "bad config: the line names the key (admin.token)" grep -q 'admin.token' <<<"$line"
        check "bad config: exactly one such line" test "$(grep -ac 'is not valid' "$console")" = 1
        # Give callbox.service time to start, fail with 78 and not restart.
        sleep 20
        code=$(status_of "http://127.0.0.1:$admin_port/healthz")
        check "bad config: callbox.service does not serve (admin /healthz: '$code')" test "$code" != 200
        banner=$(ssh_banner)
        check "no authorized_keys on the card: sshd is off (banner: '${banner}')" test -z "$banner"
        code=$(status_of "http://127.0.0.1:$public_port/healthz")
        check "bad config: nothing answers on the public port either (got '$code')" test "$code" != 200
        # callbox.socket checks the config before it listens, so callbox.service never starts
        # and no connection can start it again and again into systemd's start limit.
        check "bad config: systemd did not restart callbox.service (no 'Scheduled restart job')" no_restart
        check "bad config: no start limit was hit (no 'start-limit-hit' on the console)" \
            no_start_limit
    else
        fail "bad config: no 'not valid' line from callbox-firstboot within ${timeout_s} s or qemu stopped (see $console; use --keep)"
    fi
    stop_qemu
fi

if ((${#failures[@]})); then
    echo "boot-test: ${#failures[@]} check(s) failed:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "boot-test: all checks passed"
