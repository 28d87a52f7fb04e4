#!/usr/bin/env bash
# Checks a built callbox .deb: architecture, dependencies, files, and maintainer scripts.
#   image/check-deb.sh target/debian/callbox_*_arm64.deb
set -euo pipefail
deb="$1"
fail() { echo "check-deb: $*" >&2; exit 1; }
info=$(dpkg-deb --info "$deb")
contents=$(dpkg-deb --contents "$deb")
grep -q "Architecture: arm64" <<<"$info" || fail "not an arm64 package"
grep -q "Depends:.*libasound2" <<<"$info" || fail "missing libasound2 dependency"
grep -q "Depends:.*libc6 (>= 2.34)" <<<"$info" || fail "missing the glibc floor"
for f in ./usr/bin/callbox ./usr/lib/systemd/system/callbox.service ./usr/lib/systemd/system/callbox.socket \
         ./usr/share/callbox/callbox.toml.example ./usr/share/doc/callbox/README.md \
         ./usr/lib/udev/rules.d/60-callbox-gpio.rules; do
    grep -q " $f\$" <<<"$contents" || fail "missing $f"
done
for s in postinst postrm prerm; do
    grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$s " <<<"$info" || fail "missing maintainer script $s"
done
ctl=$(mktemp -d)
trap 'rm -rf "$ctl" "$data"' EXIT
data=$(mktemp -d)
dpkg-deb -e "$deb" "$ctl"
grep -q "adduser --system" "$ctl/postinst" || fail "postinst does not create the system user"
grep -q "addgroup --system gpio" "$ctl/postinst" || fail "postinst does not create the gpio group"
grep -q "deb-systemd-helper enable callbox.socket" "$ctl/postinst" || fail "postinst does not enable the socket"
if grep -vE "^\s*#" "$ctl/postrm" | grep -qE "rm .*(/var/lib/callbox|/etc/callbox)"; then fail "postrm deletes the call log or config"; fi
dpkg-deb -x "$deb" "$data"
file "$data/usr/bin/callbox" | grep -q "ARM aarch64" || fail "usr/bin/callbox is not an aarch64 binary"
echo "check-deb: $deb OK ($(stat -c %s "$deb") bytes)"
