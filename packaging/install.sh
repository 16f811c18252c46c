#!/usr/bin/env bash
# Installs Dispatch on this machine (as root), or removes it.
#
#   packaging/install.sh                 publish (scripts/publish.sh: NativeAOT) and install (idempotent;
#                                        an existing config is kept);
#                                        refused while Dispatch runs from the library directory
#   packaging/install.sh --upgrade       the same, also while Dispatch runs: the new tree replaces the
#                                        old one in a single rename, then the running master starts new
#                                        dispatchers (and from then on workers) from it (dispatch upgrade);
#                                        the old tree is kept as LIBDIR.previous
#   packaging/install.sh --rollback      swap LIBDIR and LIBDIR.previous back (and dispatch upgrade if running)
#   packaging/install.sh --uninstall     remove binaries, unit and the dispatch command; keep config and logs
#   packaging/install.sh --uninstall --purge   also remove config, logs, the welcome site and the user:
#                                        a directory whole only if this script created it (it holds a
#                                        .dispatch-install mark), else only what the script put there;
#                                        the user only if this script created it (its GECOS comment)
#   (packaging/uninstall.sh [--purge] is the same as --uninstall)
#
# Locations (environment; the defaults are the real system paths):
#   DISPATCH_LIBDIR  /usr/lib/dispatch          the three executables, root-owned, writable by root only
#                                               (the tree it replaced: /usr/lib/dispatch.previous)
#   DISPATCH_ETCDIR  /etc/dispatch              dispatch.json (starter written only if none), certs/
#   DISPATCH_LOGDIR  /var/log/dispatch          per-vhost access logs (root-owned, 0755)
#   DISPATCH_DATADIR /var/lib/dispatch          www/welcome, the starter config's document root
#   SYSTEMD_DIR      /etc/systemd/system        dispatch.service
#   SBINDIR          /usr/sbin                  the `dispatch` command
#   DISPATCH_USER    dispatch                   the dispatcher's system user
#   DISPATCH_BINARIES  (unset)                  install the executables already published in this
#                                               directory (scripts/publish.sh's artifacts/bin) instead of
#                                               publishing this source tree (which needs the .NET 10 SDK;
#                                               the installed executables need no .NET at all)
# Uninstall with the same variables as the install.
set -euo pipefail
umask 022

me=dispatch-install
say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

mode=install
purge=0
for arg in "$@"; do
  case "$arg" in
    --uninstall) mode=uninstall ;;
    --upgrade) mode=upgrade ;;
    --rollback) mode=rollback ;;
    --purge) purge=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$arg'" ;;
  esac
done
[ "$purge" = 0 ] || [ "$mode" = uninstall ] || die "--purge goes with --uninstall"

if [ "$(id -u)" -ne 0 ]; then
  printf '%s: error: must run as root: it installs root-owned binaries the master checks before it starts, creates the system user %s and writes /etc. Run it with sudo.\n' "$me" "${DISPATCH_USER:-dispatch}" >&2
  exit 77
fi

LIBDIR=${DISPATCH_LIBDIR:-/usr/lib/dispatch}
ETCDIR=${DISPATCH_ETCDIR:-/etc/dispatch}
LOGDIR=${DISPATCH_LOGDIR:-/var/log/dispatch}
DATADIR=${DISPATCH_DATADIR:-/var/lib/dispatch}
UNITDIR=${SYSTEMD_DIR:-/etc/systemd/system}
SBIN=${SBINDIR:-/usr/sbin}
USERNAME=${DISPATCH_USER:-dispatch}
PREVIOUS=$LIBDIR.previous
UNIT=$UNITDIR/dispatch.service
WRAPPER=$SBIN/dispatch
CONFIG=$ETCDIR/dispatch.json
MARK="Installed by Dispatch's packaging/install.sh"
# In every directory this script creates (never in one that existed): --purge removes only such a
# directory whole. Not in the welcome site's directory (a document root: dot-files are served).
DIRMARK=.dispatch-install
# The GECOS comment of the user this script creates: --purge deletes only such a user (the comment
# of earlier versions of the script, with the same home and shell, counts too).
USERMARK="Dispatch TLS dispatcher, created by packaging/install.sh"
USERMARK_OLD="Dispatch TLS dispatcher"

# Paths end up in JSON, a unit file, awk -v and a shell script: keep them to plain characters.
check_path() {
  [[ $2 =~ ^/[A-Za-z0-9._+@/-]*$ ]] || die "$1='$2' must be an absolute path of letters, digits and ._+@/- only"
  [[ $2 != */ ]] || die "$1='$2' must not end with /"
  [[ ! $2 =~ (^|/)\.\.?(/|$) ]] || die "$1='$2' must not contain . or .. components"
}
for var in LIBDIR ETCDIR LOGDIR DATADIR UNITDIR SBIN; do
  check_path "$var" "${!var}"
done
# And away from the top of the tree.
for var in LIBDIR ETCDIR LOGDIR DATADIR; do
  value=${!var}
  [[ $value =~ ^/[^/]+/[^/]+ ]] || die "$var='$value' is too close to / (at least two levels deep, like /etc/dispatch)"
done
[[ $USERNAME =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "DISPATCH_USER='$USERNAME' is not a valid system user name"

# Every component of an existing path owned by root and writable by no one else: what the master
# requires of its own directory and of the log directory, and of the certificate directories.
unsafe_component() {
  local real c rest st
  real=$(readlink -f -- "$1") || { echo "$1 cannot be resolved"; return 0; }
  c=/
  rest=${real#/}
  while :; do
    st=$(stat -c '%u %a' -- "$c") || { echo "$c cannot be read"; return 0; }
    if [ "${st%% *}" != 0 ]; then echo "$c is owned by uid ${st%% *}, not root"; return 0; fi
    if (( (8#${st#* } & 8#022) != 0 )); then echo "$c is writable by others than root (mode ${st#* })"; return 0; fi
    [ -n "$rest" ] || return 0
    c=${c%/}/${rest%%/*}
    [[ $rest == */* ]] && rest=${rest#*/} || rest=
  done
}

# The deepest existing ancestor of a path must be safe: what is created below it is root's, 0755.
check_parent_chain() {
  local p=$1 why
  while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done
  why=$(unsafe_component "$p")
  [ -z "$why" ] || die "refusing $2 '$1': $why (the master would refuse to use it)"
}

dirmark_line() { printf '%s: created %s; install.sh --uninstall --purge removes this directory whole' "$MARK" "$1"; }

# Marks a directory this script has just created.
mark_created() {
  local m=$1/$DIRMARK
  printf '%s.\nA directory that existed before the install carries no such file: purge keeps it.\n' "$(dirmark_line "$1")" >"$m"
  chown root:root -- "$m"
  chmod 644 -- "$m"
}

# Did this script create DIR? Its mark names DIR, and the mark and DIR are root's and writable by
# root only (so no one else can have planted the mark there).
created_here() {
  local dir=$1 m=$1/$DIRMARK st
  if [ ! -d "$dir" ] || [ -L "$dir" ] || [ ! -f "$m" ] || [ -L "$m" ]; then return 1; fi
  st=$(stat -c '%u %a' -- "$dir") || return 1
  if [ "${st%% *}" != 0 ] || (( (8#${st#* } & 8#022) != 0 )); then return 1; fi
  st=$(stat -c '%u %a' -- "$m") || return 1
  if [ "${st%% *}" != 0 ] || (( (8#${st#* } & 8#022) != 0 )); then return 1; fi
  [ "$(head -n 1 -- "$m")" = "$(dirmark_line "$dir")." ]
}

# Creates a directory root:root with MODE and marks it, or brings an existing one (left unmarked) to
# root ownership with no group/other write, saying what changed.
ensure_dir() {
  local dir=$1 mode=$2 st
  if [ ! -d "$dir" ]; then
    if [ -e "$dir" ] || [ -L "$dir" ]; then die "$dir exists and is not a directory"; fi
    install -d -o root -g root -m "$mode" -- "$dir"
    mark_created "$dir"
    say "created $dir (root:root $mode)"
    return
  fi
  [ ! -L "$dir" ] || die "$dir is a symbolic link; make it a real directory"
  st=$(stat -c '%u %g %a' -- "$dir")
  if [ "${st%% *}" != 0 ] || (( (8#${st##* } & 8#022) != 0 )); then
    chown root:root -- "$dir"
    chmod go-w -- "$dir"
    say "fixed $dir: was uid/gid/mode $st, now $(stat -c '%u %g %a' -- "$dir")"
  else
    say "kept $dir (mode ${st##* })"
  fi
}

# Pids of processes whose executable lives in LIBDIR or LIBDIR.previous (a master, dispatcher or
# worker of this install: after an upgrade the master still runs its old image, which moved to
# LIBDIR.previous, and stays "LIBDIR.previous/Master (deleted)" once a later upgrade removed it).
running_pids() {
  local real e target pids=()
  [ -d "$(dirname -- "$LIBDIR")" ] || return 0
  real=$(readlink -f -- "$(dirname -- "$LIBDIR")")/$(basename -- "$LIBDIR")
  for e in /proc/[0-9]*/exe; do
    target=$(readlink -- "$e" 2>/dev/null) || continue
    case "$target" in "$real"/* | "$real".previous/*) e=${e#/proc/}; pids+=("${e%/exe}") ;; esac
  done
  echo "${pids[*]:-}"
}

systemd_running() { [ -d /run/systemd/system ]; }

refuse_if_running() {
  local pids
  pids=$(running_pids)
  [ -z "$pids" ] || die "Dispatch is running from $LIBDIR (pids $pids): stop it first (systemctl stop dispatch, or SIGTERM to the master), then $1"
}

# Exchanges two directories in one renameat2(RENAME_EXCHANGE): at every instant each name holds a
# whole tree, so a process starting LIBDIR/TlsDispatcher gets the old tree or the new one, never a mix.
# mv --exchange (coreutils 9.5+), else perl's syscall() (perl-base is on every Debian), else python3.
exchange_dirs() {
  if mv --help 2>/dev/null | grep -q -- '--exchange'; then
    mv --exchange --no-target-directory -- "$1" "$2"
  elif command -v perl >/dev/null; then
    perl -MPOSIX -e '
      my %nr = (x86_64 => 316, aarch64 => 276, riscv64 => 276, loongarch64 => 276, ppc64le => 357, s390x => 347, i686 => 353, armv7l => 382);
      my $nr = eval { require "syscall.ph"; &SYS_renameat2 } // $nr{(POSIX::uname())[4]}
        // die "renameat2: no system call number for this architecture\n";
      syscall($nr, -100, $ARGV[0], -100, $ARGV[1], 2) == 0 or die "renameat2(RENAME_EXCHANGE): $!\n";
    ' -- "$1" "$2"
  elif command -v python3 >/dev/null; then
    python3 -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), 2) != 0:
    sys.exit("renameat2(RENAME_EXCHANGE): " + os.strerror(ctypes.get_errno()))
' "$1" "$2"
  else
    echo "no way to call renameat2(RENAME_EXCHANGE): needs coreutils 9.5+ (mv --exchange), perl or python3" >&2
    return 1
  fi
}

# Before the long publish: can this file system exchange two directories next to LIBDIR?
probe_exchange() {
  local parent=$1 a b
  a=$(mktemp -d "$parent/.dispatch-probe.XXXXXX")
  b=$(mktemp -d "$parent/.dispatch-probe.XXXXXX")
  touch -- "$a/a"
  if exchange_dirs "$a" "$b" 2>"$a/err" && [ -e "$b/a" ] && [ ! -e "$a/a" ]; then
    rm -rf -- "$a" "$b"
    return 0
  fi
  local why
  why=$(cat -- "$a/err" "$b/err" 2>/dev/null || true)
  rm -rf -- "$a" "$b"
  die "cannot swap directories atomically in $parent (renameat2 with RENAME_EXCHANGE): ${why:-unsupported}"
}

daemon_reload() {
  if systemd_running; then
    systemctl daemon-reload
    say "systemctl daemon-reload done"
  else
    say "systemd is not running on this machine (no /run/systemd/system): skipped systemctl daemon-reload"
  fi
}

# Removes a file only if it carries our mark (so an admin's own file of the same name survives).
remove_marked() {
  local file=$1
  if [ -L "$file" ] || [ -e "$file" ]; then
    if grep -qF "$MARK" -- "$file" 2>/dev/null; then
      rm -f -- "$file"
      say "removed $file"
    else
      say "left $file: not installed by this script"
    fi
  else
    say "$file: not present"
  fi
}

remove_tree() {
  if [ -e "$1" ] || [ -L "$1" ]; then
    rm -rf -- "$1"
    say "removed $1"
  else
    say "$1: not present"
  fi
}

# Purge of one directory: whole if this script created it; otherwise OWN (a function) first removes
# only what the script put there, then the directory goes if that left it empty, else it is kept.
purge_dir() {
  local dir=$1 own=${2:-} left n
  if [ -L "$dir" ]; then say "left $dir: a symbolic link"; return; fi
  if [ ! -e "$dir" ]; then say "$dir: not present"; return; fi
  if [ ! -d "$dir" ]; then say "left $dir: not a directory"; return; fi
  if created_here "$dir"; then
    rm -rf -- "$dir"
    say "removed $dir (created by the install)"
    return
  fi
  [ -z "$own" ] || "$own"
  if rmdir -- "$dir" 2>/dev/null; then
    say "removed $dir (it had no $DIRMARK mark, but held nothing else)"
  else
    left=$(find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | sed -n '1,5p' | tr '\n' ' ')
    n=$(find "$dir" -mindepth 1 -maxdepth 1 -printf '.' | wc -c)
    say "kept $dir: the install did not create it (no $DIRMARK), so only the script's own files were removed from it; it holds $n other entries: ${left% }$([ "$n" -le 5 ] || echo ' ...')"
  fi
}

# Dispatch's config (edited or not) in a directory the install did not create; certs/ like any directory.
purge_etc_own() {
  if [ -d "$CONFIG" ] && [ ! -L "$CONFIG" ]; then
    say "left $CONFIG: a directory"
  elif [ -e "$CONFIG" ] || [ -L "$CONFIG" ]; then
    rm -f -- "$CONFIG"
    say "removed $CONFIG"
  fi
  purge_dir "$ETCDIR/certs"
}
purge_data_own() { purge_dir "$DATADIR/www" purge_www_own; }
purge_www_own() { purge_dir "$DATADIR/www/welcome" purge_welcome_own; }
purge_welcome_own() { remove_marked "$DATADIR/www/welcome/index.html"; }

# Did this script create USERNAME? Its GECOS comment (and the home and shell it gives).
created_user() {
  local entry uid gecos home shell
  entry=$(getent passwd "$USERNAME") || return 1
  IFS=: read -r _ _ uid _ gecos home shell <<<"$entry"
  [ "$uid" != 0 ] && [ "$home" = /nonexistent ] && [ "$shell" = /usr/sbin/nologin ] &&
    { [ "$gecos" = "$USERMARK" ] || [ "$gecos" = "$USERMARK_OLD" ]; }
}

purge_user() {
  local gid
  if ! getent passwd "$USERNAME" >/dev/null; then
    say "user $USERNAME: not present"
    return
  fi
  if ! created_user; then
    say "kept user $USERNAME: not created by this script (its comment is not '$USERMARK')"
    return
  fi
  gid=$(id -g "$USERNAME")
  userdel "$USERNAME"
  say "removed user $USERNAME"
  # Its own group (useradd --user-group), if userdel left it.
  if [ "$(getent group "$USERNAME" | cut -d: -f3)" = "$gid" ]; then
    if groupdel "$USERNAME"; then say "removed group $USERNAME"; else say "could not remove group $USERNAME"; fi
  fi
}

uninstall() {
  refuse_if_running "uninstall"
  if systemd_running && [ "$UNITDIR" = /etc/systemd/system ] && [ -e "$UNIT" ]; then
    systemctl disable dispatch.service >/dev/null 2>&1 || true
  fi
  local wants=$UNITDIR/multi-user.target.wants/dispatch.service
  if [ -L "$wants" ]; then rm -f -- "$wants"; say "removed $wants"; fi
  remove_marked "$UNIT"
  remove_marked "$WRAPPER"
  local dir
  for dir in "$LIBDIR" "$PREVIOUS"; do
    if [ -d "$dir" ] && [ ! -e "$dir/Master" ]; then
      say "left $dir: it holds no Master, so it is not a Dispatch install"
    else
      remove_tree "$dir"
    fi
  done
  daemon_reload
  if [ "$purge" = 1 ]; then
    purge_dir "$ETCDIR" purge_etc_own
    purge_dir "$LOGDIR"
    purge_dir "$DATADIR" purge_data_own
    purge_user
    say "purged (what was kept, and why, is said above)"
  else
    say "kept $ETCDIR (config, certificates), $LOGDIR (logs), $DATADIR and user $USERNAME; --uninstall --purge removes them"
    say "uninstalled"
  fi
}

publish() {
  local out=$1 repo p
  if [ -n "${DISPATCH_BINARIES:-}" ]; then
    [ -d "$DISPATCH_BINARIES" ] || die "DISPATCH_BINARIES='$DISPATCH_BINARIES' is not a directory"
    cp -a -- "$DISPATCH_BINARIES/." "$out/"
    say "copied published binaries from $DISPATCH_BINARIES"
    return
  fi
  repo=$(cd "$(dirname -- "$0")/.." && pwd)
  [ -f "$repo/src/Master/Master.csproj" ] || die "no source tree at $repo (set DISPATCH_BINARIES to install already published binaries)"
  command -v dotnet >/dev/null || die "dotnet not found: publishing from source needs the .NET 10 SDK (or set DISPATCH_BINARIES to install already published binaries; they need no .NET)"
  say "scripts/publish.sh (NativeAOT: Master, TlsDispatcher, Worker; minutes)..."
  "$repo/scripts/publish.sh" "$out" >/dev/null || die "scripts/publish.sh failed"
}

# A real, existing LIBDIR (or PREVIOUS) must be ours to replace.
check_replaceable() {
  if [ -e "$1" ] || [ -L "$1" ]; then
    if [ ! -d "$1" ] || [ -L "$1" ]; then die "$1 exists and is not a directory"; fi
    [ -e "$1/Master" ] || [ -z "$(ls -A -- "$1")" ] || die "$1 is not empty and holds no Master: not replacing it"
  fi
}

# Publishes into a fresh root-owned sibling of LIBDIR, then puts it in place: the first time by a
# rename; after that the old tree's place is taken by an exchange (one renameat2), the old tree
# landing in LIBDIR.previous (the one before that is removed). LIBDIR stays a real directory: the
# master resolves its own directory once at start and spawns LIBDIR/TlsDispatcher and LIBDIR/Worker
# by that path, so after the swap it starts the new binaries and checks them as it always does.
install_binaries() {
  local parent stage p
  parent=$(dirname -- "$LIBDIR")
  install -d -o root -g root -m 755 -- "$parent"
  check_replaceable "$LIBDIR"
  check_replaceable "$PREVIOUS"
  [ ! -d "$LIBDIR" ] || probe_exchange "$parent"
  stage=$(mktemp -d "$parent/.dispatch-stage.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap must remove this stage directory
  trap "rm -rf -- '$stage'" EXIT
  publish "$stage"
  for p in Master TlsDispatcher Worker; do
    [ -x "$stage/$p" ] || die "the published output lacks $p"
  done
  [ -f "$stage/dispatch-openssl.cnf" ] || die "the published output lacks dispatch-openssl.cnf (the OpenSSL engines' TLS policy)"
  chown -R root:root -- "$stage"
  chmod -R u+rwX,go+rX,go-w -- "$stage"
  chmod 755 -- "$stage"
  if [ -d "$LIBDIR" ]; then
    # The new tree goes to PREVIOUS's name first, so the old tree moves only once (in the exchange).
    if [ -e "$PREVIOUS" ]; then
      rm -rf -- "$PREVIOUS"
      say "removed the tree before the last one ($PREVIOUS)"
    fi
    mv -T -- "$stage" "$PREVIOUS"
    # shellcheck disable=SC2064 # expand now: on failure the new tree is removed again
    trap "rm -rf -- '$PREVIOUS'" EXIT
    exchange_dirs "$PREVIOUS" "$LIBDIR" || die "could not swap the new tree into $LIBDIR; nothing changed there"
    trap - EXIT
    if [ -z "$(ls -A -- "$PREVIOUS")" ]; then
      rmdir -- "$PREVIOUS"
      say "installed the binaries in $LIBDIR (swapped in for an empty directory)"
    else
      say "replaced the binaries in $LIBDIR in one rename; the previous ones are in $PREVIOUS (--rollback swaps them back)"
    fi
  else
    mv -T -- "$stage" "$LIBDIR"
    trap - EXIT
    say "installed the binaries in $LIBDIR"
  fi
  local why
  why=$(unsafe_component "$LIBDIR/Master")
  [ -z "$why" ] || die "$LIBDIR is not safe after install: $why"
}

# After a swap: if Dispatch runs from LIBDIR, have its master start new dispatchers (and from then
# on workers) from the tree now there (the wrapper's upgrade verb: the control socket of $CONFIG).
# The master itself keeps running its old image: a change to its own code needs a restart.
trigger_upgrade() {
  local pids answer
  pids=$(running_pids)
  if [ -z "$pids" ]; then
    say "Dispatch is not running from $LIBDIR: the new binaries are used at its next start"
    return
  fi
  say "Dispatch is running (pids $pids): $WRAPPER upgrade"
  if answer=$("$WRAPPER" upgrade 2>&1); then
    say "master: ${answer%$'\n'}"
    if [ -e "${1:-}/Master" ] && ! cmp -s -- "$1/Master" "$LIBDIR/Master"; then
      say "note: the master's own code changed; it runs the old one until restarted (systemctl restart dispatch)"
    fi
  else
    printf '%s: error: the binaries are installed, but the running master did not upgrade: %s\n' "$me" "${answer%$'\n'}" >&2
    printf '%s: run %s upgrade [--config FILE | --socket PATH] for the config it runs with, or send it SIGUSR2\n' "$me" "$WRAPPER" >&2
    exit 1
  fi
}

# Swaps LIBDIR and LIBDIR.previous back (one exchange again), then upgrades a running master onto it.
rollback() {
  [ -e "$PREVIOUS/Master" ] || die "no previous install to roll back to ($PREVIOUS holds no Master)"
  [ -e "$LIBDIR/Master" ] || die "$LIBDIR holds no Master: not a Dispatch install"
  if [ -L "$LIBDIR" ] || [ -L "$PREVIOUS" ]; then die "$LIBDIR or $PREVIOUS is a symbolic link"; fi
  local why
  why=$(unsafe_component "$PREVIOUS/Master")
  [ -z "$why" ] || die "refusing to roll back to $PREVIOUS: $why"
  exchange_dirs "$PREVIOUS" "$LIBDIR" || die "could not swap $PREVIOUS and $LIBDIR; nothing changed"
  say "rolled back: $LIBDIR holds the previous binaries, the ones it replaced are in $PREVIOUS (--rollback again swaps them back)"
  trigger_upgrade "$PREVIOUS"
}

ensure_user() {
  local uid
  if getent passwd "$USERNAME" >/dev/null; then
    uid=$(id -u "$USERNAME")
    [ "$uid" != 0 ] || die "user $USERNAME is uid 0: the dispatcher must not run as root (choose another DISPATCH_USER)"
    say "kept user $USERNAME (uid $uid)"
    return
  fi
  command -v useradd >/dev/null || die "useradd not found (Debian: apt-get install passwd)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group \
    --comment "$USERMARK" "$USERNAME"
  say "created system user $USERNAME (uid $(id -u "$USERNAME"), no home, no login shell)"
}

# The starter's only pool: the unprivileged "nobody" (a real install gives every tenant its own uid).
starter_identity() {
  local user=65534 group=65534 g
  getent passwd nobody >/dev/null && [ "$(id -u nobody)" = 65534 ] && user=nobody
  for g in nogroup nobody; do
    if [ "$(getent group "$g" | cut -d: -f3)" = 65534 ]; then group=$g; break; fi
  done
  echo "$user $group"
}

write_starter() {
  local site=$DATADIR/www/welcome puser pgroup tmp
  ensure_dir "$DATADIR" 755
  ensure_dir "$DATADIR/www" 755
  if [ ! -e "$site" ]; then
    install -d -o root -g root -m 755 -- "$site"
    cat >"$site/index.html" <<HTML
<!doctype html>
<html><head><meta charset="utf-8"><title>Dispatch</title></head>
<body><h1>Dispatch is running</h1>
<!-- $MARK: the starter site -->
<p>This is the starter site. Edit $CONFIG to add your sites (see docs/configuration.md).</p>
</body></html>
HTML
    chmod 644 -- "$site/index.html"
    say "created the welcome site $site"
  fi
  if [ -e "$CONFIG" ] || [ -L "$CONFIG" ]; then
    say "kept the existing $CONFIG (never overwritten)"
    return
  fi
  read -r puser pgroup <<<"$(starter_identity)"
  tmp=$(mktemp "$ETCDIR/.dispatch.json.XXXXXX")
  cat >"$tmp" <<JSON
{
  "listen": [
    { "endpoint": "0.0.0.0:80", "protocol": "http" }
  ],
  "dispatcher": { "user": "$USERNAME" },
  "pools": {
    "welcome": { "user": "$puser", "group": "$pgroup", "maxWorkers": 2 }
  },
  "vhosts": {
    "localhost": {
      "pool": "welcome",
      "root": "$site",
      "accessLog": "$LOGDIR/localhost.log"
    }
  },
  "log": { "level": "Information" }
}
JSON
  chown root:root -- "$tmp"
  chmod 644 -- "$tmp"
  mv -- "$tmp" "$CONFIG"
  say "wrote the starter config $CONFIG (the welcome site as http://localhost/ on port 80)"
}

install_unit() {
  local tmp
  install -d -o root -g root -m 755 -- "$UNITDIR"
  tmp=$(mktemp "$UNITDIR/.dispatch.service.XXXXXX")
  {
    echo "# $MARK from packaging/dispatch.service: binaries in $LIBDIR, config $CONFIG."
    echo "# The master tells systemd READY=1 once it serves (Type=notify); systemctl reload sends SIGHUP."
    awk -v lib="$LIBDIR/" -v cfg="$CONFIG" '
      /^\[Unit\]/ { started = 1 }
      !started { next }
      { gsub("/usr/lib/dispatch/", lib); gsub("/etc/dispatch/dispatch.json", cfg); print }' "$(dirname -- "$0")/dispatch.service"
  } >"$tmp"
  grep -qxF "ExecStart=$LIBDIR/Master --config $CONFIG" "$tmp" || die "could not adapt the unit's ExecStart to $LIBDIR"
  chmod 644 -- "$tmp"
  mv -- "$tmp" "$UNIT"
  say "installed $UNIT"
}

install_wrapper() {
  local tmp
  install -d -o root -g root -m 755 -- "$SBIN"
  tmp=$(mktemp "$SBIN/.dispatch.XXXXXX")
  cat >"$tmp" <<SH
#!/bin/sh
# $MARK: the Dispatch command, the master's own command line with the installed config as default
# (dispatch --help lists the verbs and exit codes; docs/operations.md).
#   dispatch check [-c FILE]         validate the config (default $CONFIG), exit 1 on any error
#   dispatch run [-c FILE]           run Dispatch in the foreground (as root; systemd runs $LIBDIR/Master itself)
#   dispatch status [--json]         the running master's dispatchers, pools, workers, vhosts, certificates
#   dispatch reload                  validate and apply the config (= SIGHUP), with the result printed
#   dispatch upgrade                 new dispatchers (then workers) from the binaries now in $LIBDIR (= SIGUSR2)
#   dispatch reopen                  reopen the log files (= SIGUSR1)
#     (status, reload, upgrade and reopen talk to the control socket named in the config; -c FILE or
#      --socket PATH for another)
export DISPATCH_CONFIG='$CONFIG'
export DISPATCH_PROGRAM=dispatch
exec '$LIBDIR/Master' "\$@"
SH
  chmod 755 -- "$tmp"
  mv -- "$tmp" "$WRAPPER"
  say "installed $WRAPPER"
}

install_all() {
  # The executables are NativeAOT (docs/aot.md): the host needs no .NET runtime to run them.
  if [ "$mode" = install ]; then
    local pids
    pids=$(running_pids)
    [ -z "$pids" ] || die "Dispatch is running from $LIBDIR (pids $pids): install.sh --upgrade installs under it (the new tree is swapped in whole, then the master starts new dispatchers and workers from it; nothing is dropped), or stop it first"
  fi
  check_parent_chain "$ETCDIR" DISPATCH_ETCDIR
  check_parent_chain "$LOGDIR" DISPATCH_LOGDIR
  check_parent_chain "$DATADIR" DISPATCH_DATADIR
  check_parent_chain "$LIBDIR" DISPATCH_LIBDIR
  check_parent_chain "$UNITDIR" SYSTEMD_DIR
  check_parent_chain "$SBIN" SBINDIR
  if [ -e "$WRAPPER" ] && ! grep -qF "$MARK" -- "$WRAPPER"; then
    die "$WRAPPER exists and was not installed by this script: not replacing it"
  fi

  install_binaries
  ensure_user
  ensure_dir "$ETCDIR" 755
  ensure_dir "$ETCDIR/certs" 700
  ensure_dir "$LOGDIR" 755
  write_starter
  install_unit
  install_wrapper
  daemon_reload

  if "$WRAPPER" check --config "$CONFIG" >/dev/null 2>&1; then
    say "$WRAPPER check: $CONFIG is OK"
  else
    say "WARNING: $CONFIG does not pass the check; see: $WRAPPER check --config $CONFIG"
  fi
  if [ "$mode" = upgrade ]; then
    trigger_upgrade "$PREVIOUS"
    return
  fi
  say "installed. Next: edit $CONFIG, then"
  if systemd_running; then
    say "  systemctl enable --now dispatch    (systemctl reload dispatch after edits; logs: journalctl -u dispatch)"
  else
    say "  $WRAPPER run    (foreground; on a systemd host: systemctl enable --now dispatch)"
  fi
}

case "$mode" in
  uninstall) uninstall ;;
  rollback) rollback ;;
  *) install_all ;;
esac
