# Shared body of install-dispatcher.sh and install-node.sh; sourced, not run. The caller sets:
#   name        the binary and unit name (dispy-dispatcher, dispy-node)
#   user        the service user (dispy, dispy-node)
#   config      the config file name in /etc/dispy and deploy/ (dispatcher.toml, node.toml)
#   tls         the certificate directory in /etc/dispy (dispatcher, node)
#   state       the unit's StateDirectory under /var/lib (dispy-dispatcher, dispy-node)
#   dispatcher_option   1 if --dispatcher HOST:PORT, --token and --name are accepted (the node),
#                       else 0
#   tls_owner   owner:group of /etc/dispy/$tls (the node owns its own, to save renewals)
# then calls main "$@". Plain POSIX sh: it runs under dash as well as bash.

usage() {
    cat <<EOF
Usage: $script [OPTIONS] [BINARY]
EOF
    if [ "$dispatcher_option" = 1 ]; then
        cat <<EOF
       $script --dispatcher HOST:PORT --token TOKEN [--name NAME] [BINARY]
EOF
    fi
    cat <<EOF

Installs $name: the binary (BINARY, default target/release/$name), /etc/dispy/$config (from
deploy/$config, never overwriting an existing one), certificates, the system user $user and
systemd/$name.service, then runs systemctl daemon-reload and enable --now. Running it again
changes nothing unless an input changed.

Options:
  --tls-dir DIR     copy ca.pem, cert.pem and key.pem from DIR into /etc/dispy/$tls
                    (key.pem mode 0600, owned by $user); existing ones are replaced
EOF
    if [ "$dispatcher_option" = 1 ]; then
        cat <<EOF
  --dispatcher H:P  the dispatcher's address, written into a newly created /etc/dispy/$config
  --token TOKEN     enrol with a join token from \`dispy-dispatcher token create\` (needs
                    --dispatcher): the node makes its own key, pins the CA the token names and
                    writes its certificate into /etc/dispy/$tls; skipped when a certificate is
                    already there (the node renews it itself)
  --name NAME       with --token: the node name to ask for [default: the host name]; a token
                    made with --name decides
EOF
    fi
    cat <<EOF
  --root DIR        staged install into DIR: no useradd, chown or systemctl; the skipped root
                    steps are written to DIR/usr/local/share/dispy/$name-setup.sh
  --uninstall       stop and remove the binary and the unit; keep config, certificates, state
  --purge           with --uninstall: also remove config, certificates, state and the user
  -h, --help        this text
EOF
}

say() {
    printf '%s: %s\n' "$script" "$*"
}

die() {
    printf '%s: error: %s\n' "$script" "$*" >&2
    exit 1
}

# put SRC DEST MODE: installs SRC as DEST with MODE (octal, e.g. 644), atomically, only if the
# content or mode differs. Sets changed=1 when it writes.
put() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        if [ "$(stat -c %a "$2")" != "$3" ]; then
            chmod "$3" "$2"
            changed=1
            say "set mode $3 on $2"
        fi
        return 0
    fi
    mkdir -p "$(dirname "$2")"
    # Private until its mode is set: key.pem is never readable by others, even briefly.
    (umask 077 && cp "$1" "$2.dispy-new")
    chmod "$3" "$2.dispy-new"
    mv -f "$2.dispy-new" "$2"
    changed=1
    say "installed $2"
}

# dir PATH MODE: creates PATH with MODE, or fixes the mode of an existing one.
dir() {
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        chmod "$2" "$1"
        changed=1
    elif [ "$(stat -c %a "$1")" != "$2" ]; then
        chmod "$2" "$1"
        changed=1
    fi
}

# own PATH OWNER:GROUP: changes ownership if it differs (real installs only).
own() {
    if [ -e "$1" ] && [ "$(stat -c %U:%G "$1")" != "$2" ]; then
        chown "$2" "$1"
        changed=1
    fi
}

remove() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        rm -rf "$1"
        say "removed $1"
    fi
}

systemd_running() {
    [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

ensure_user() {
    if getent passwd "$user" >/dev/null 2>&1; then
        return 0
    fi
    shell=/usr/sbin/nologin
    [ -x "$shell" ] || shell=/bin/false
    useradd --system --user-group --home-dir "/var/lib/$state" --no-create-home \
        --shell "$shell" --comment "$name service" "$user"
    changed=1
    say "created system user $user"
}

# Enrols with the join token: the installed binary makes the key here and writes ca.pem,
# cert.pem and key.pem into the TLS directory. An identity already there is kept (the node renews
# it itself), so running the script again with the same, now spent, token changes nothing.
enrol() {
    tls_dir=$root/etc/dispy/$tls
    if [ -f "$tls_dir/cert.pem" ] && [ -f "$tls_dir/key.pem" ]; then
        say "keeping the identity in $tls_dir (already enrolled); the token was not used"
        return 0
    fi
    say "enrolling with $dispatcher_address"
    if [ -n "$node_name" ]; then
        "$root/usr/local/bin/$name" join "$dispatcher_address" "$token" --tls-dir "$tls_dir" --name "$node_name" ||
            die "enrolment failed (above); nothing was started"
    else
        "$root/usr/local/bin/$name" join "$dispatcher_address" "$token" --tls-dir "$tls_dir" ||
            die "enrolment failed (above); nothing was started"
    fi
    changed=1
}

# The root steps a staged install skips, as a script for the target machine.
write_setup_script() {
    setup=$staging/setup.sh
    cat >"$setup" <<EOF
#!/bin/sh
# Root steps that \`$script --root\` skipped: run this as root on the machine that boots the
# staged tree. Safe to run more than once.
set -eu
getent passwd $user >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/$state --no-create-home --shell /usr/sbin/nologin --comment "$name service" $user
chown $tls_owner /etc/dispy/$tls
for file in ca.pem cert.pem key.pem; do
    [ ! -e /etc/dispy/$tls/\$file ] || chown $user:$user /etc/dispy/$tls/\$file
done
systemctl daemon-reload
systemctl enable --now $name.service
EOF
    put "$setup" "$root/usr/local/share/dispy/$name-setup.sh" 755
}

install_all() {
    [ -f "$binary" ] || die "no binary at $binary: run 'cargo build --release' or pass its path"
    [ -f "$repo/systemd/$name.service" ] || die "missing $repo/systemd/$name.service"
    [ -f "$repo/deploy/$config" ] || die "missing $repo/deploy/$config"
    if [ -n "$tls_src" ]; then
        for file in ca.pem cert.pem key.pem; do
            [ -f "$tls_src/$file" ] || die "--tls-dir $tls_src has no $file"
        done
    fi
    if [ -n "$token" ]; then
        [ -z "$tls_src" ] || die "give --tls-dir or --token, not both"
        [ -n "$dispatcher_address" ] || die "--token needs --dispatcher HOST:PORT"
    fi
    [ -n "$root" ] || ensure_user

    # Was the service running before? Then a changed binary, unit or certificate restarts it.
    was_active=0
    if systemd_running && systemctl is-active --quiet "$name.service"; then
        was_active=1
    fi

    put "$binary" "$root/usr/local/bin/$name" 755
    put "$repo/systemd/$name.service" "$root/etc/systemd/system/$name.service" 644

    dir "$root/etc/dispy" 755
    if [ -e "$root/etc/dispy/$config" ]; then
        if [ -n "$dispatcher_address" ] &&
            ! grep -q "^dispatcher = \"$dispatcher_address\"" "$root/etc/dispy/$config"; then
            say "keeping existing $root/etc/dispy/$config: edit its dispatcher key yourself"
        fi
    else
        if [ -n "$dispatcher_address" ]; then
            sed "s|^dispatcher = .*|dispatcher = \"$dispatcher_address\"|" \
                "$repo/deploy/$config" >"$staging/$config"
        else
            cp "$repo/deploy/$config" "$staging/$config"
        fi
        put "$staging/$config" "$root/etc/dispy/$config" 644
    fi

    dir "$root/etc/dispy/$tls" 750
    if [ -n "$tls_src" ]; then
        put "$tls_src/ca.pem" "$root/etc/dispy/$tls/ca.pem" 644
        put "$tls_src/cert.pem" "$root/etc/dispy/$tls/cert.pem" 644
        put "$tls_src/key.pem" "$root/etc/dispy/$tls/key.pem" 600
    fi
    if [ -n "$token" ]; then
        enrol
    fi
    if [ -z "$root" ]; then
        own "/etc/dispy/$tls" "$tls_owner"
        for file in ca.pem cert.pem key.pem; do
            own "/etc/dispy/$tls/$file" "$user:$user"
        done
    fi
    has_certs=0
    if [ -f "$root/etc/dispy/$tls/cert.pem" ] && [ -f "$root/etc/dispy/$tls/key.pem" ]; then
        has_certs=1
    else
        say "warning: no certificates in $root/etc/dispy/$tls yet; rerun with --tls-dir DIR"
    fi

    if [ -n "$root" ]; then
        write_setup_script
        say "staged into $root; as root on the target, run /usr/local/share/dispy/$name-setup.sh"
    elif ! systemd_running; then
        say "systemd is not running: skipped systemctl; start /usr/local/bin/$name yourself"
    else
        [ "$changed" = 0 ] || systemctl daemon-reload
        if [ "$has_certs" = 1 ]; then
            systemctl enable --now "$name.service"
            if [ "$changed" = 1 ] && [ "$was_active" = 1 ]; then
                systemctl restart "$name.service"
                say "restarted $name.service"
            fi
        else
            systemctl enable "$name.service"
            say "enabled $name.service; it starts once certificates are installed"
        fi
    fi
    if [ "$changed" = 0 ]; then
        say "already installed; nothing changed"
    fi
}

uninstall_all() {
    if systemd_running; then
        systemctl disable --now "$name.service" 2>/dev/null || true
    fi
    remove "$root/etc/systemd/system/$name.service"
    remove "$root/usr/local/bin/$name"
    remove "$root/usr/local/share/dispy/$name-setup.sh"
    if systemd_running; then
        systemctl daemon-reload
    fi
    if [ "$purge" = 1 ]; then
        remove "$root/etc/dispy/$config"
        remove "$root/etc/dispy/$tls"
        remove "$root/var/lib/$state"
        if [ -z "$root" ] && getent passwd "$user" >/dev/null 2>&1; then
            userdel "$user"
            say "removed system user $user"
        fi
    else
        say "kept $root/etc/dispy/$config, $root/etc/dispy/$tls and $root/var/lib/$state (--purge removes them)"
    fi
    # Shared directories go only when empty (the other daemon may still use them).
    rmdir "$root/usr/local/share/dispy" "$root/etc/dispy" 2>/dev/null || true
}

main() {
    script=$(basename "$0")
    repo=$(cd "$(dirname "$0")/.." && pwd)
    binary=
    tls_src=
    root=
    dispatcher_address=
    token=
    node_name=
    uninstall=0
    purge=0
    while [ $# -gt 0 ]; do
        case $1 in
            --tls-dir) [ $# -ge 2 ] || die "--tls-dir needs a directory"; tls_src=$2; shift 2 ;;
            --tls-dir=*) tls_src=${1#*=}; shift ;;
            --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
            --root=*) root=${1#*=}; shift ;;
            --dispatcher | --dispatcher=*)
                [ "$dispatcher_option" = 1 ] || die "unknown option $1 (see --help)"
                case $1 in
                    *=*) dispatcher_address=${1#*=}; shift ;;
                    *) [ $# -ge 2 ] || die "--dispatcher needs host:port"; dispatcher_address=$2; shift 2 ;;
                esac
                case $dispatcher_address in
                    *:* ) ;;
                    *) die "--dispatcher needs host:port, got '$dispatcher_address'" ;;
                esac
                ;;
            --token | --token=* | --name | --name=*)
                [ "$dispatcher_option" = 1 ] || die "unknown option $1 (see --help)"
                case $1 in
                    --token=*) token=${1#*=}; shift ;;
                    --name=*) node_name=${1#*=}; shift ;;
                    --token) [ $# -ge 2 ] || die "--token needs a join token"; token=$2; shift 2 ;;
                    *) [ $# -ge 2 ] || die "--name needs a node name"; node_name=$2; shift 2 ;;
                esac
                ;;
            --uninstall) uninstall=1; shift ;;
            --purge) purge=1; shift ;;
            -h | --help) usage; exit 0 ;;
            -*) die "unknown option $1 (see --help)" ;;
            *) [ -z "$binary" ] || die "more than one binary given"; binary=$1; shift ;;
        esac
    done
    [ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge only goes with --uninstall"
    if [ -n "$root" ]; then
        mkdir -p "$root"
        root=$(cd "$root" && pwd)
        [ "$root" != / ] || die "--root / is a real install: leave --root out"
    elif [ "$(id -u)" != 0 ]; then
        die "run as root, or stage into a directory with --root DIR"
    fi
    [ -n "$binary" ] || binary=$repo/target/release/$name
    if [ -n "$tls_src" ]; then
        tls_src=$(cd "$tls_src" 2>/dev/null && pwd) || die "--tls-dir: no directory $tls_src"
    fi

    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    changed=0
    if [ "$uninstall" = 1 ]; then
        uninstall_all
    else
        install_all
    fi
}
