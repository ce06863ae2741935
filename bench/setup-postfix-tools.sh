#!/usr/bin/env bash
# Installs Debian's postfix package for its smtp-source and smtp-sink test tools only: the
# Postfix daemon is not configured and not started.
set -euo pipefail
exec "$(dirname "$0")/../tools/apt-install-no-start.sh" postfix
