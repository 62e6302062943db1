#!/bin/sh
# Checks systemd/dispy-dispatcher.service and systemd/dispy-node.service with
# `systemd-analyze verify`, failing on any error or warning.
#
# Usage: deploy/test-units.sh [UNIT_DIR]      (default: the repository's systemd/)
#
# verify insists that ExecStart's binary exists and is executable, and /usr/local/bin/dispy-* are
# not installed on a build machine. So each unit is copied into a temporary directory with a
# drop-in (UNIT.service.d/test.conf, which verify reads like systemd does) that replaces only the
# binary's path with an executable stub and keeps the arguments. The unit's own ExecStart must
# still name /usr/local/bin/NAME, where the install scripts put the binary.
#
# Needs systemd-analyze (Debian: apt-get install -y systemd); systemd need not be running.
# Exits 0 when both units are clean, 1 when one is not, 2 when it cannot run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
unit_dir=${1:-$here/../systemd}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "test-units.sh: systemd-analyze not found; install it with: apt-get install -y systemd" >&2
    exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=0
for name in dispy-dispatcher dispy-node; do
    unit=$unit_dir/$name.service
    if [ ! -f "$unit" ]; then
        echo "FAIL $name: $unit is missing" >&2
        failed=1
        continue
    fi
    exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
    binary=${exec_start%% *}
    arguments=${exec_start#"$binary"}
    if [ "$binary" != "/usr/local/bin/$name" ]; then
        echo "FAIL $name: ExecStart runs '$binary', expected /usr/local/bin/$name" >&2
        failed=1
        continue
    fi
    mkdir -p "$tmp/bin" "$tmp/$name.service.d"
    printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/$name"
    chmod 0755 "$tmp/bin/$name"
    cp "$unit" "$tmp/$name.service"
    printf '[Service]\nExecStart=\nExecStart=%s%s\n' "$tmp/bin/$name" "$arguments" \
        >"$tmp/$name.service.d/test.conf"
    # verify prints nothing for a clean unit; warnings (unknown keys, bad values) do not change
    # its exit status, so any output is a failure too.
    if output=$(cd "$tmp" && systemd-analyze verify --man=no "$tmp/$name.service" 2>&1) \
        && [ -z "$output" ]; then
        echo "ok   $name.service"
    else
        echo "FAIL $name.service:" >&2
        printf '%s\n' "$output" >&2
        failed=1
    fi
done
exit "$failed"
