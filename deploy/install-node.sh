#!/bin/sh
# Installs dispy-node as a systemd service: binary, /etc/dispy/node.toml, certificates in
# /etc/dispy/node (copied, or made by enrolling with a join token), the system user dispy-node and the unit; idempotent. `--help` for options,
# deploy/README.md for a walkthrough.
#
#   sudo deploy/install-node.sh --dispatcher dispatcher.example.com:7870 \
#       --token dispy1.SECRET.FINGERPRINT target/release/dispy-node
# or, with a certificate issued by hand:
#   sudo deploy/install-node.sh --dispatcher dispatcher.example.com:7870 \
#       --tls-dir pki/nodes/node-a target/release/dispy-node
set -eu
name=dispy-node
user=dispy-node
config=node.toml
tls=node
state=dispy-node
tls_owner=dispy-node:dispy-node
dispatcher_option=1
. "$(dirname "$0")/install-common.sh"
main "$@"
