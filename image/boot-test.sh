#!/usr/bin/env bash
# Boots a built callbox SD image under qemu-system-aarch64 (-M virt) and checks, from the host,
# that first boot imported a callbox.toml put on the FAT boot partition and that the service
# answers through forwarded loopback ports:
#   - public listener (port 443 in the guest, from callbox.socket): GET /healthz -> 200
#   - admin listener (8080 in the guest): GET /healthz -> 200, GET /api/v1/health with the test
#     config's admin token -> 200 and without it -> 401 (so the running config is the one put
#     on the card, not the template)
#   - the guest's journal (forwarded to the serial console) shows the import line
#   - an authorized_keys file put on the card turns sshd on: key login as root works, password
#     login is not offered, and inside the box /etc/callbox/callbox.toml is root's, mode 0600
# Then, unless --good-only, boots again with a bad callbox.toml (a too-short admin token) and no
# authorized_keys, and checks the one journal line naming admin.token, that nothing answers,
# that systemd neither restarts callbox.service nor hits a start limit, and that sshd is off.
#
#   image/boot-test.sh [--good-only] [--timeout SECONDS] [--keep] IMAGE
#
# The image itself is not changed: the test boots a sparse copy. The Pi's GPU boot path cannot
# be emulated, so the kernel and initrd named in the image's config.txt are taken off the FAT
# partition and passed to qemu directly; the rootfs, fstab, both partitions, udev, systemd and
# the units are the image's own. Needs: qemu-system-arm, mtools, fdisk, curl, openssh-client. Each boot is
# bounded by --timeout (default 300 s) and qemu is killed at the end.
set -euo pipefail

timeout_s=300
good_only=0
keep=0
img=""
while (($#)); do
    case "$1" in
        --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
        --good-only) good_only=1; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "boot-test: unknown option $1" >&2; exit 2 ;;
        *) img=$1; shift ;;
    esac
done
[[ -n "$img" && -f "$img" ]] || { echo "boot-test: usage: image/boot-test.sh [--good-only] [--timeout S] IMAGE" >&2; exit 2; }
for tool in qemu-system-aarch64 mcopy mtype sfdisk curl ss ssh ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "boot-test: $tool is missing (apt-get install qemu-system-arm mtools fdisk curl iproute2 openssh-client)" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/boot-test.XXXXXX")
qemu_pid=""
stop_qemu() {
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
log() { echo "boot-test: $*" >&2; }
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
[[ -n "$boot_start" ]] || { echo "boot-test: $img has no first partition" >&2; exit 1; }
export MTOOLS_SKIP_CHECK=1
config=$(mtype -i "$img@@$((boot_start * 512))" ::/config.txt | tr -d '\r')
kernel=$(sed -n 's/^kernel=//p' <<<"$config" | tail -n 1)
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' <<<"$config" | tail -n 1)
[[ -n "$kernel" && -n "$initrd" ]] || { echo "boot-test: config.txt names no kernel or initramfs" >&2; exit 1; }
mcopy -i "$img@@$((boot_start * 512))" "::/$kernel" "$tmp/vmlinuz"
mcopy -i "$img@@$((boot_start * 512))" "::/$initrd" "$tmp/initrd.img"

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
write_config() { # write_config FILE ADMIN_TOKEN
    cat >"$1" <<EOF
# boot-test.sh: test values only.
public_url = "https://callbox-boot-test.localdomain"

[server]
listen = "0.0.0.0:443"

[admin]
listen = "0.0.0.0:8080"
token = "$2"

[twilio]
auth_token = "6d7fce9fee471194aa8b5b6e47267f03"

[storage]
dir = "/var/lib/callbox"

[tls]
mode = "off"
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
    write_config "$tmp/$name.toml" "$2"
    mcopy -o -i "$sd@@$((boot_start * 512))" "$tmp/$name.toml" ::/callbox.toml
    if [[ -n "${3:-}" ]]; then mcopy -o -i "$sd@@$((boot_start * 512))" "$3" ::/authorized_keys; fi
    public_port=$(free_port)
    admin_port=$(free_port)
    ssh_port=$(free_port)
    console="$tmp/$name-console.log"
    log "$name: booting (public 127.0.0.1:$public_port -> 443, admin 127.0.0.1:$admin_port -> 8080; console $console)"
    timeout "$timeout_s" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
        -kernel "$tmp/vmlinuz" -initrd "$tmp/initrd.img" \
        -append "root=LABEL=rootfs rootwait ro console=ttyAMA0 systemd.journald.forward_to_console=1" \
        -drive "if=none,file=$sd,format=raw,id=hd0" -device virtio-blk-pci,drive=hd0 \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$public_port-:443,hostfwd=tcp:127.0.0.1:$admin_port-:8080,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
        -device virtio-net-pci,netdev=n0,romfile= \
        -display none -monitor none -serial "file:$console" -no-reboot &
    qemu_pid=$!
    boot_t0=$SECONDS
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
no_restart() { ! grep -aq "callbox.service: Scheduled restart job" "$console"; }
no_start_limit() { ! grep -aq "start-limit-hit" "$console"; }
# The SSH banner through the forwarded port (empty when nothing listens in the guest).
# shellcheck disable=SC2016 # $1 expands in the inner bash
ssh_banner() { timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -c 7 <&3' _ "$ssh_port" 2>/dev/null || true; }
guest() { ssh "${ssh_opts[@]}" -o BatchMode=yes -i "$tmp/id_ed25519" -p "$ssh_port" root@127.0.0.1 "$@"; }

# --- good config ---------------------------------------------------------------------------------
boot good "$admin_token" "$tmp/id_ed25519.pub"
if t=$(wait_for "http://127.0.0.1:$admin_port/healthz"); then
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
check "first boot imported callbox.toml from the boot partition (journal line on the console)" \
    console_has "imported /boot/firmware/callbox.toml into /etc/callbox/callbox.toml"
check "first boot validated the config ('is valid' on the console)" console_has "/etc/callbox/callbox.toml is valid"
mode=""
for _ in $(seq 30); do
    mode=$(guest "stat -c '%U:%G %a' /etc/callbox/callbox.toml" 2>/dev/null || true)
    [[ -n "$mode" ]] && break
    sleep 2
done
check "authorized_keys on the card turned sshd on: key login as root works" test -n "$mode"
banner=$(ssh_banner)
check "the SSH banner is readable through the forwarded port (got '$banner')" test "$banner" = SSH-2.0
check "inside the box /etc/callbox/callbox.toml is root:root 0600 (got '$mode')" test "$mode" = "root:root 600"
denied=$(ssh "${ssh_opts[@]}" -o BatchMode=yes -o PubkeyAuthentication=no -p "$ssh_port" root@127.0.0.1 true 2>&1 || true)
check "sshd offers no password login (got '${denied//$'\n'/ }')" grep -q 'Permission denied (publickey)' <<<"$denied"
stop_qemu

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
