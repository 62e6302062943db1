#!/bin/sh
# Exercises install-dispatcher.sh and install-node.sh with staged installs (--root) into a
# temporary directory, as an unprivileged user or root alike (a staged install never calls
# useradd, chown or systemctl). For each script it checks that:
#   1. a first install puts the binary, unit, config, certificates (key.pem mode 0600) and the
#      setup script for the skipped root steps in place;
#   2. a second identical run changes nothing: a listing of every path with its mode, inode and
#      SHA-256 is the same before and after;
#   3. an operator's edit to the config survives a reinstall;
#   4. --uninstall removes the binary, the unit and the setup script but keeps config and
#      certificates, and --uninstall --purge leaves no file behind.
# Binaries and certificates are stand-ins: the scripts only copy them.
#
# Usage: deploy/test-install.sh      Exits 0 when every check passes, 1 otherwise.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
    printf 'FAIL %s\n' "$*" >&2
    failures=$((failures + 1))
}

# Every path under $1 with type, mode, inode and content hash: equal listings mean nothing was
# created, removed, rewritten (a rewrite gets a new inode) or re-moded.
listing() {
    (cd "$1" && find . -print | LC_ALL=C sort | while IFS= read -r path; do
        if [ -f "$path" ] && [ ! -L "$path" ]; then
            printf '%s %s %s\n' "$(stat -c '%F %a %i' "$path")" \
                "$(sha256sum <"$path" | cut -d' ' -f1)" "$path"
        else
            printf '%s %s\n' "$(stat -c '%F %a' "$path")" "$path"
        fi
    done)
}

expect_file() {
    [ -f "$1" ] || { fail "$2: missing $1"; return 0; }
    if [ -n "${3:-}" ] && [ "$(stat -c %a "$1")" != "$3" ]; then
        fail "$2: $1 has mode $(stat -c %a "$1"), expected $3"
    fi
}

expect_gone() {
    [ ! -e "$1" ] || fail "$2: $1 still exists"
}

mkdir -p "$tmp/tls"
for file in ca cert key; do
    printf 'stand-in %s.pem\n' "$file" >"$tmp/tls/$file.pem"
done

check() {
    script=$1 name=$2 config=$3 tls=$4
    root=$tmp/root-$name
    printf '#!/bin/sh\necho stand-in %s\n' "$name" >"$tmp/$name"
    label="$script"

    if ! sh "$here/$script" --root "$root" --tls-dir "$tmp/tls" "$tmp/$name" >"$tmp/log" 2>&1; then
        fail "$label: first install failed:"; cat "$tmp/log" >&2; return 0
    fi
    expect_file "$root/usr/local/bin/$name" "$label" 755
    expect_file "$root/etc/systemd/system/$name.service" "$label" 644
    expect_file "$root/etc/dispy/$config" "$label" 644
    expect_file "$root/etc/dispy/$tls/ca.pem" "$label" 644
    expect_file "$root/etc/dispy/$tls/cert.pem" "$label" 644
    expect_file "$root/etc/dispy/$tls/key.pem" "$label" 600
    expect_file "$root/usr/local/share/dispy/$name-setup.sh" "$label" 755
    cmp -s "$here/../systemd/$name.service" "$root/etc/systemd/system/$name.service" \
        || fail "$label: installed unit differs from systemd/$name.service"
    grep -q "useradd" "$root/usr/local/share/dispy/$name-setup.sh" \
        || fail "$label: setup script does not create the user"

    listing "$root" >"$tmp/first"
    if ! sh "$here/$script" --root "$root" --tls-dir "$tmp/tls" "$tmp/$name" >"$tmp/log" 2>&1; then
        fail "$label: second install failed:"; cat "$tmp/log" >&2; return 0
    fi
    listing "$root" >"$tmp/second"
    if ! diff -u "$tmp/first" "$tmp/second" >"$tmp/diff"; then
        fail "$label: the second install changed the tree:"; cat "$tmp/diff" >&2
    fi
    grep -q "nothing changed" "$tmp/log" || fail "$label: second run did not report 'nothing changed'"

    printf '# edited by the operator\n' >>"$root/etc/dispy/$config"
    cp "$root/etc/dispy/$config" "$tmp/edited"
    sh "$here/$script" --root "$root" "$tmp/$name" >"$tmp/log" 2>&1 || fail "$label: reinstall failed"
    cmp -s "$tmp/edited" "$root/etc/dispy/$config" || fail "$label: reinstall overwrote the config"

    sh "$here/$script" --root "$root" --uninstall >"$tmp/log" 2>&1 || fail "$label: --uninstall failed"
    expect_gone "$root/usr/local/bin/$name" "$label --uninstall"
    expect_gone "$root/etc/systemd/system/$name.service" "$label --uninstall"
    expect_gone "$root/usr/local/share/dispy/$name-setup.sh" "$label --uninstall"
    expect_file "$root/etc/dispy/$config" "$label --uninstall"
    expect_file "$root/etc/dispy/$tls/key.pem" "$label --uninstall" 600

    sh "$here/$script" --root "$root" --uninstall --purge >"$tmp/log" 2>&1 \
        || fail "$label: --uninstall --purge failed"
    left=$(find "$root" ! -type d)
    [ -z "$left" ] || fail "$label --uninstall --purge left files: $left"
    echo "ok   $script"
}

check install-dispatcher.sh dispy-dispatcher dispatcher.toml dispatcher
check install-node.sh dispy-node node.toml node

# The node's --dispatcher goes into a new config only.
root=$tmp/root-address
printf 'x\n' >"$tmp/dispy-node"
sh "$here/install-node.sh" --root "$root" --dispatcher 10.0.0.1:7870 "$tmp/dispy-node" >/dev/null 2>&1
grep -q '^dispatcher = "10.0.0.1:7870"$' "$root/etc/dispy/node.toml" \
    || fail "install-node.sh --dispatcher did not set the address"
sh "$here/install-node.sh" --root "$root" --dispatcher 10.0.0.2:7870 "$tmp/dispy-node" >/dev/null 2>&1
grep -q '^dispatcher = "10.0.0.1:7870"$' "$root/etc/dispy/node.toml" \
    || fail "install-node.sh --dispatcher changed an existing config"
echo "ok   install-node.sh --dispatcher"

# Bad invocations fail without touching anything.
if sh "$here/install-node.sh" --root "$tmp/root-bad" "$tmp/no-such-binary" >/dev/null 2>&1; then
    fail "install-node.sh accepted a missing binary"
fi
if sh "$here/install-dispatcher.sh" --root "$tmp/root-bad" --dispatcher x:1 "$tmp/dispy-node" \
    >/dev/null 2>&1; then
    fail "install-dispatcher.sh accepted --dispatcher"
fi
[ -z "$(find "$tmp/root-bad" ! -type d 2>/dev/null)" ] || fail "a failed install left files"
echo "ok   bad invocations"

if [ "$failures" -gt 0 ]; then
    echo "test-install.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "test-install.sh: all checks passed"
