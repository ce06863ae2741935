#!/usr/bin/env bash
# Installs Debian's postfix package for its smtp-source and smtp-sink test tools only: the
# Postfix daemon is not configured and not started.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/smtp-sink ]; then exit 0; fi
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# policy-rc.d exit 101 tells the package scripts not to start any service.
created=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  created=yes
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postfix >/dev/null
if [ -n "$created" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
