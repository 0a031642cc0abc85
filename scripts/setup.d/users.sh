#!/usr/bin/env bash
# The users a root canopyd needs, as the .deb's postinst creates them: `ggc_user:ggc_group`
# (components run as it by default) and the `canopy` group (IPC socket and CLI operators).
# canopyd itself never creates users: a missing run-as user fails the deployment with a message
# that says how to create it. Idempotent.
set -euo pipefail
getent group canopy >/dev/null || groupadd --system canopy
getent group ggc_group >/dev/null || groupadd --system ggc_group
getent passwd ggc_user >/dev/null ||
  useradd --system --gid ggc_group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ggc_user
echo "setup.d/users.sh: users ggc_user:ggc_group and group canopy present"
