#!/usr/bin/env bash
# Unpacks Exim (Debian exim4-daemon-light) into a directory, for the interoperability tests
# that run it as a real SMTP client. It is never installed: its package conflicts with the
# Postfix that the other tests use, and nothing here should become the machine's MTA. The
# tests run the unpacked binary with a configuration of their own (-C). Its libraries and
# nss_wrapper (which gives the tests a "Debian-exim" user without adding one to the system)
# are test packages of tools/dev.sh; libidn12 and nss_wrapper are unpacked beside it when they
# are not installed.
#   tools/fetch-exim.sh DIR     (the tests look in build/peers/exim, or $EXIM_ROOT)
set -euo pipefail
dir=${1:?usage: fetch-exim.sh DIR}
if [ -x "$dir/usr/sbin/exim4" ]; then exit 0; fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
packages=(exim4-daemon-light)
for p in libidn12 libnss-wrapper; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || packages+=("$p")
done
echo "fetch-exim: unpacking ${packages[*]} into $dir"
# apt-get download writes into the current directory; _apt cannot always enter a mktemp dir.
chmod 755 "$work"
(cd "$work" && apt-get download -qq "${packages[@]}" >/dev/null 2>&1 ||
  apt-get download "${packages[@]}")
for deb in "$work"/*.deb; do dpkg -x "$deb" "$dir"; done
# dpkg -x keeps the set-user-ID bit: a root-owned copy would be setuid root (and the loader
# would then ignore LD_LIBRARY_PATH). The tests need neither.
chmod u-s "$dir/usr/sbin/exim4"
