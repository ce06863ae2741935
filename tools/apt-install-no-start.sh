#!/usr/bin/env bash
# Installs Debian packages without starting the services they ship (Postfix for its
# smtp-source/smtp-sink test tools, Prometheus for promtool and a test scraper): a
# policy-rc.d that answers 101 tells the package scripts not to start anything.
#   tools/apt-install-no-start.sh PACKAGE...
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
created=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  created=yes
fi
echo "apt-install-no-start: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
if [ -n "$created" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
