#!/bin/sh
# Entry point of both mnistbench images: runs the given command (default: `dvc repro`) in the
# repository mounted at /workspace (the working directory).
#
# Files written into the mount must belong to the user who owns the clone, not to root. When the
# container runs as root (plain `docker run`) and the working directory belongs to someone else,
# the command runs as that user and group instead (setpriv, from util-linux). With
# `--user "$(id -u):$(id -g)"` nothing changes hands. MNISTBENCH_KEEP_ROOT=1 keeps root.
set -eu

if [ "$#" -eq 0 ]; then
    set -- dvc repro
fi

# HOME must be writable: DVC, git, matplotlib and TFDS keep small files there. The image's HOME
# is world-writable (like /tmp); this covers `-e HOME=...` pointing somewhere read-only.
if ! { [ -d "${HOME:-}" ] && [ -w "${HOME:-}" ]; }; then
    HOME="$(mktemp -d /tmp/home.XXXXXX)"
    export HOME
fi

# A uid without a passwd entry (any --user, or the clone's owner) has no user name, and
# Python's getpass.getuser() (DVC calls it for its site cache) then fails: give it one.
name_for() {
    getent passwd "$1" | cut -d: -f1 | grep . || echo "uid$1"
}

if [ "$(id -u)" = 0 ] && [ "${MNISTBENCH_KEEP_ROOT:-0}" != 1 ]; then
    uid="$(stat -c %u .)"
    gid="$(stat -c %g .)"
    if [ "$uid" != 0 ]; then
        USER="$(name_for "$uid")"
        LOGNAME="$USER"
        export USER LOGNAME
        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
    fi
fi
USER="${USER:-$(name_for "$(id -u)")}"
LOGNAME="${LOGNAME:-$USER}"
export USER LOGNAME
exec "$@"
