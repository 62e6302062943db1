#!/bin/sh
# Installs dispy-dispatcher as a systemd service: binary, /etc/dispy/dispatcher.toml,
# certificates in /etc/dispy/dispatcher, the system user dispy and the unit; idempotent.
# `--help` for options, deploy/README.md for a walkthrough.
#
#   sudo deploy/install-dispatcher.sh --tls-dir pki/dispatcher target/release/dispy-dispatcher
set -eu
name=dispy-dispatcher
user=dispy
config=dispatcher.toml
tls=dispatcher
state=dispy-dispatcher
tls_owner=root:dispy
dispatcher_option=0
. "$(dirname "$0")/install-common.sh"
main "$@"
