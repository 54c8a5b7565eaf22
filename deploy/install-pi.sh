#!/usr/bin/env bash
# Install, update and roll back the cabinet software on Raspberry Pi OS (64-bit, Bookworm).
#
#   install-pi.sh install --wheel FILE|--source DIR [--tls DIR] [--kiosk]
#                                    first install on a fresh Pi: packages, users, release,
#                                    units, hardware watchdog, journald limits; enables cabinet
#   install-pi.sh update --wheel FILE|--source DIR
#                                    new release beside the old one, config pre-flight, switch,
#                                    restart; switches back by itself if the new one fails to start
#   install-pi.sh activate VERSION   switch to an installed release (and restart)
#   install-pi.sh rollback           switch back to the release that ran before the last switch
#   install-pi.sh status             list releases, show current and previous
#
# Layout: every release is a full virtualenv, so switching is one atomic rename:
#   /opt/cabinet/releases/<version>/{venv,docs}   one per installed version
#   /opt/cabinet/current  -> releases/<version>     what runs
#   /opt/cabinet/previous -> releases/<version>     what ran before (rollback target)
#   /opt/cabinet/venv     -> current/venv           the path the units use
# The ledger (/var/lib/cabinet) is never copied back on rollback: events recorded by the new
# release stay. See docs/deploy.md.
#
# CABINET_ROOT (default empty) prefixes every path; with it set, nothing outside it is
# touched (no apt, users or units), which is how tests/deploy/test_install_script.py runs it.
set -euo pipefail

ROOT="${CABINET_ROOT:-}"
OPT="$ROOT/opt/cabinet"
ETC="$ROOT/etc/cabinet"
KEEP_RELEASES="${CABINET_KEEP_RELEASES:-3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

die() { echo "install-pi.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
system() { [[ -z "$ROOT" ]]; }  # true when installing into the real system

check_platform() {
    system || return 0
    [[ $EUID -eq 0 ]] || die "run as root (sudo $0 $*)"
    # onnxruntime and cbor2 publish aarch64 wheels only: a 32-bit (armhf) userland cannot run
    # the cabinet even on a 64-bit kernel, which `uname -m` alone would not reveal.
    local arch
    arch="$(dpkg --print-architecture)"
    [[ "$arch" == arm64 || "$arch" == amd64 ]] \
        || die "userland is $arch: install Raspberry Pi OS (64-bit); onnxruntime has no 32-bit ARM wheels"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "python3 is older than 3.11: use Raspberry Pi OS Bookworm (64-bit) or newer"
}

current_version() { [[ -L "$OPT/current" ]] && basename "$(readlink "$OPT/current")" || true; }
previous_version() { [[ -L "$OPT/previous" ]] && basename "$(readlink "$OPT/previous")" || true; }

# Point link NAME at TARGET atomically (rename over the old link: never a moment without one).
relink() {
    local target="$1" name="$2"
    ln -sfn "$target" "$name.new"
    mv -Tf "$name.new" "$name"
}

restart_cabinet() {
    # cabinet.service is Type=notify: restart returns once READY=1 came, or fails.
    systemctl restart cabinet.service && systemctl is-active --quiet cabinet.service
}

switch_to() {
    local version="$1" was
    [[ -d "$OPT/releases/$version/venv" ]] || die "release $version is not installed in $OPT/releases"
    was="$(current_version)"
    [[ "$was" == "$version" ]] && { log "release $version is already current"; return 0; }
    [[ -n "$was" ]] && relink "releases/$was" "$OPT/previous"
    relink "releases/$version" "$OPT/current"
    [[ -L "$OPT/venv" ]] || relink "current/venv" "$OPT/venv"
    log "current release: $version (previous: ${was:-none})"
    if ! restart_cabinet; then
        echo "install-pi.sh: cabinet.service did not start on release $version" >&2
        if [[ -n "$was" ]]; then
            relink "releases/$was" "$OPT/current"
            relink "releases/$version" "$OPT/previous"
            restart_cabinet || die "release $was does not start either: see journalctl -u cabinet"
            die "rolled back to release $was; see journalctl -u cabinet for why $version failed"
        fi
        die "see journalctl -u cabinet -b"
    fi
}

version_of() {
    local src="$1"
    if [[ "$src" == *.whl ]]; then
        basename "$src" | cut -d- -f2
    else
        local v
        v="$(sed -n 's/^version *= *//p' "$src/setup.cfg")"
        echo "$v+$(git -C "$src" rev-parse --short HEAD 2>/dev/null || date +%Y%m%d%H%M)"
    fi
}

new_release() {
    local src="$1" version rel
    [[ -e "$src" ]] || die "$src does not exist"
    version="$(version_of "$src")"
    rel="$OPT/releases/$version"
    [[ -e "$rel" ]] && die "release $version is already installed ($rel); use: $0 activate $version"
    log "building release $version in $rel"
    mkdir -p "$rel.partial/docs"
    python3 -m venv "$rel.partial/venv"
    "$rel.partial/venv/bin/pip" install --quiet --no-cache-dir --upgrade pip
    # lgpio: gpiozero's pin factory on a Pi (aarch64 wheel); not a dependency of the package
    # because the simulator and the cloud do not need it.
    "$rel.partial/venv/bin/pip" install --quiet --no-cache-dir "$src" "lgpio>=0.2.2,<0.3"
    cp "$REPO/docs/deploy.md" "$rel.partial/docs/" 2>/dev/null || true
    if [[ -f "$ETC/cabinet.toml" ]]; then
        "$rel.partial/venv/bin/cabinet" config check "$ETC/cabinet.toml" \
            || die "release $version rejects $ETC/cabinet.toml; nothing switched (left in $rel.partial)"
    fi
    # Byte-compile once as root: the service runs with a read-only /opt.
    "$rel.partial/venv/bin/python" -m compileall -q "$rel.partial/venv/lib" >/dev/null || true
    mv -T "$rel.partial" "$rel"
    echo "$version"
}

prune_releases() {
    local keep cur prev n=0
    cur="$(current_version)"; prev="$(previous_version)"
    # Newest first; always keep current and previous.
    for rel in $(ls -1t "$OPT/releases"); do
        n=$((n + 1))
        [[ "$rel" == "$cur" || "$rel" == "$prev" ]] && continue
        if (( n > KEEP_RELEASES )); then
            log "removing old release $rel"
            rm -rf "${OPT:?}/releases/$rel"
        fi
    done
}

install_system() {
    local kiosk="$1"
    log "installing OS packages"
    apt-get update -q
    apt-get install -y -q python3-venv python3-dev sqlite3 ca-certificates systemd-timesyncd
    if [[ "$kiosk" == yes ]]; then
        apt-get install -y -q cage chromium fonts-noto-cjk
    fi
    log "creating users (systemd-sysusers)"
    install -m 0644 "$REPO/systemd/sysusers.d/cabinet.conf" /usr/lib/sysusers.d/cabinet.conf
    systemd-sysusers /usr/lib/sysusers.d/cabinet.conf
    log "installing units"
    install -m 0644 "$REPO/systemd/cabinet.service" /etc/systemd/system/cabinet.service
    [[ "$kiosk" == yes ]] && install -m 0644 "$REPO/systemd/cabinet-kiosk.service" /etc/systemd/system/
    install -d /etc/systemd/system.conf.d /etc/systemd/journald.conf.d
    install -m 0644 "$REPO/systemd/system.conf.d/cabinet-watchdog.conf" /etc/systemd/system.conf.d/
    install -m 0644 "$REPO/systemd/journald.conf.d/cabinet.conf" /etc/systemd/journald.conf.d/
    # The cloud's "reboot" command: the sandboxed service may ask logind for a reboot, nothing else.
    install -d /etc/polkit-1/rules.d
    install -m 0644 "$HERE/polkit/50-cabinet-reboot.rules" /etc/polkit-1/rules.d/
    systemctl daemon-reload
    systemctl restart systemd-journald
}

install_tls() {
    # DIR: what `deploy/pki.py cabinet ID` wrote (client.pem, client.key, ca.pem).
    local dir="$1"
    for f in client.pem client.key ca.pem; do [[ -f "$dir/$f" ]] || die "$dir/$f missing"; done
    install -d -m 0750 -o root -g cabinet "$ETC" "$ETC/tls"
    install -m 0644 -o root -g cabinet "$dir/client.pem" "$dir/ca.pem" "$ETC/tls/"
    install -m 0640 -o root -g cabinet "$dir/client.key" "$ETC/tls/"
    log "TLS identity installed in $ETC/tls (CN: $(openssl x509 -noout -subject -nameopt multiline -in "$dir/client.pem" | sed -n 's/ *commonName *= *//p'))"
}

parse_source() {
    SRC=""; TLS=""; KIOSK=no
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --wheel|--source) SRC="$2"; shift 2 ;;
            --tls) TLS="$2"; shift 2 ;;
            --kiosk) KIOSK=yes; shift ;;
            *) die "unknown option $1" ;;
        esac
    done
    [[ -n "$SRC" ]] || die "give --wheel FILE or --source DIR"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    install)
        parse_source "$@"
        check_platform
        system && install_system "$KIOSK"
        [[ -n "$TLS" ]] && install_tls "$TLS"
        mkdir -p "$OPT/releases"
        version="$(new_release "$SRC" | tail -n1)"
        if [[ ! -f "$ETC/cabinet.toml" ]] && system; then
            install -d -m 0750 -o root -g cabinet "$ETC"
            install -m 0640 -o root -g cabinet "$HERE/cabinet.toml.example" "$ETC/cabinet.toml"
            log "wrote $ETC/cabinet.toml from the example: set cabinet.id and sync.broker_host, then"
            log "  systemctl start cabinet; journalctl -u cabinet -b | grep -i 'setup code'"
            relink "releases/$version" "$OPT/current"; relink "current/venv" "$OPT/venv"
            systemctl enable cabinet.service
            [[ "$KIOSK" == yes ]] && systemctl enable cabinet-kiosk.service
            exit 0
        fi
        system && systemctl enable cabinet.service
        system && [[ "$KIOSK" == yes ]] && systemctl enable cabinet-kiosk.service
        switch_to "$version"
        ;;
    update)
        parse_source "$@"
        check_platform
        version="$(new_release "$SRC" | tail -n1)"
        switch_to "$version"
        prune_releases
        ;;
    activate)
        [[ $# -eq 1 ]] || die "usage: $0 activate VERSION"
        switch_to "$1"
        ;;
    rollback)
        prev="$(previous_version)"
        [[ -n "$prev" ]] || die "no previous release recorded in $OPT/previous"
        switch_to "$prev"
        ;;
    status)
        cur="$(current_version)"; prev="$(previous_version)"
        for rel in $(ls -1t "$OPT/releases" 2>/dev/null); do
            mark=""; [[ "$rel" == "$cur" ]] && mark=" (current)"; [[ "$rel" == "$prev" ]] && mark=" (previous)"
            echo "$rel$mark"
        done
        ;;
    *)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        [[ "$cmd" == -h || "$cmd" == --help ]] && exit 0
        exit 2
        ;;
esac
