#!/bin/sh
# Rebuilds dovecot-fixture.tar and dovecot-fixture.view with the Dovecot
# installed here (Debian dovecot-imapd): a Maildir++ with flags, keywords,
# a non-ASCII folder, subscriptions and an expunge gap, and Dovecot's own
# IMAP view of it. Dovecot's binary index files are left out, so reading
# the fixture exercises dovecot-uidlist, dovecot-keywords and subscriptions.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
chown 65534:65534 "$d"
python3 "$here/dovecot_session.py" "$d" make >/dev/null
python3 "$here/dovecot_session.py" "$d" view >"$here/dovecot-fixture.view"
cd "$d"
find Maildir -name 'dovecot.index*' -o -name 'dovecot.list.index*' -o -name 'dovecot.mailbox.log' | xargs rm -f
tar --numeric-owner --owner=0 --group=0 -cf "$here/dovecot-fixture.tar" Maildir
