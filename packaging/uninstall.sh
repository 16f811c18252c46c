#!/usr/bin/env bash
# Removes Dispatch (as root): packaging/uninstall.sh [--purge]. The same as packaging/install.sh --uninstall;
# pass the same location variables as the install (see install.sh). Without --purge, the config
# (/etc/dispatch), the logs (/var/log/dispatch), /var/lib/dispatch and the system user are kept.
# With --purge, only directories and a user that the install created are removed whole (see install.sh).
exec "$(dirname -- "$0")/install.sh" --uninstall "$@"
