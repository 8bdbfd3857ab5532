#!/usr/bin/env bash
# Installs overlayd, overlayctl and overlay-cni built in $BIN under $PREFIX: the binaries, the systemd unit
# (Type=notify), the configuration file (only where none is yet), man pages and shell completions.
# `make install [PREFIX=/usr/local] [SYSCONFDIR=/etc]` calls it; see README.md.
set -euo pipefail
: "${BIN:?BIN must name the directory the binaries were built in}"
PREFIX="${PREFIX:-/usr/local}"
SYSCONFDIR="${SYSCONFDIR:-/etc}"
UNITDIR="${UNITDIR:-$PREFIX/lib/systemd/system}"
MANPAGES="${MANPAGES:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"

install -d "$PREFIX/bin" "$UNITDIR" "$PREFIX/share/man/man8" "$PREFIX/share/man/man1" \
    "$PREFIX/share/bash-completion/completions" "$PREFIX/share/zsh/site-functions" "$PREFIX/share/fish/vendor_completions.d"
install -m 0755 "$BIN/overlayd" "$BIN/overlayctl" "$PREFIX/bin/"
echo "installed $PREFIX/bin/overlayd, $PREFIX/bin/overlayctl"
# The CNI plugin, where podman looks by default ($PREFIX/lib/cni; Kubernetes nodes: /opt/cni/bin).
CNIDIR="${CNIDIR:-$PREFIX/lib/cni}"
install -d "$CNIDIR"
install -m 0755 "$BIN/overlay-cni" "$CNIDIR/"
echo "installed $CNIDIR/overlay-cni"

sed -e "s|@BINDIR@|$PREFIX/bin|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" "$root/Packaging/overlayd.service.in" > "$UNITDIR/overlayd.service"
chmod 0644 "$UNITDIR/overlayd.service"
echo "installed $UNITDIR/overlayd.service"

install -d -m 0755 "$SYSCONFDIR/overlayd"
if [ -e "$SYSCONFDIR/overlayd/daemon.json" ]; then
    echo "kept $SYSCONFDIR/overlayd/daemon.json"
else
    install -m 0644 "$root/Packaging/daemon.json" "$SYSCONFDIR/overlayd/daemon.json"
    echo "installed $SYSCONFDIR/overlayd/daemon.json"
fi

for program in overlayd overlayctl; do
    "$PREFIX/bin/$program" --generate-completion-script bash > "$PREFIX/share/bash-completion/completions/$program"
    "$PREFIX/bin/$program" --generate-completion-script zsh > "$PREFIX/share/zsh/site-functions/_$program"
    "$PREFIX/bin/$program" --generate-completion-script fish > "$PREFIX/share/fish/vendor_completions.d/$program.fish"
done
echo "installed bash, zsh and fish completions"

if [ -n "$MANPAGES" ] && [ -d "$MANPAGES" ]; then
    # swift-argument-parser's generate-manual plugin: overlayd is a daemon (section 8), overlayctl a command (1).
    for page in "$MANPAGES"/*/*.1; do
        name="$(basename "$page")"
        case "$name" in
            overlayd*) sed -e 's/^\(\.Dt [^ ]*\) 1$/\1 8/' "$page" > "$PREFIX/share/man/man8/${name%.1}.8" ;;
            *) install -m 0644 "$page" "$PREFIX/share/man/man1/$name" ;;
        esac
    done
    echo "installed man pages"
fi
