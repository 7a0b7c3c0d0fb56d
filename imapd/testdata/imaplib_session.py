#!/usr/bin/env python3
"""Drives imapd with Python's imaplib through every common command.

Usage: imaplib_session.py HOST PORT USER PASSWORD
Prints one line per check and exits non-zero on the first failure.
"""
import email
import imaplib
import sys
import time

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def check(cond, what):
    if not cond:
        print("FAIL", what)
        sys.exit(1)
    print("ok", what)


m = imaplib.IMAP4(host, port)
check(b"IMAP4rev1" in m.capabilities or "IMAP4REV1" in m.capabilities, "capabilities")
typ, _ = m.login(user, password)
check(typ == "OK", "login")
typ, data = m.list()
check(typ == "OK" and any(b'"Sent"' in d or b" Sent" in d for d in data), "list")
check(m.create("py/child")[0] == "OK", "create")
check(m.rename("py", "python")[0] == "OK", "rename")
check(m.subscribe("python/child")[0] == "OK", "subscribe")
typ, data = m.lsub()
check(typ == "OK" and any(b"python/child" in d for d in data), "lsub")
msg = b"From: py@example.edu\r\nTo: alice@example.edu\r\nSubject: from python\r\n\r\nHello from imaplib.\r\n"
typ, data = m.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(time.time()), msg)
check(typ == "OK" and b"APPENDUID" in data[0], "append")
typ, data = m.select("INBOX")
check(typ == "OK" and int(data[0]) >= 1, "select")
typ, data = m.search(None, "SUBJECT", '"from python"')
check(typ == "OK" and data[0].split(), "search")
num = data[0].split()[-1]
typ, data = m.fetch(num, "(RFC822 FLAGS)")
check(typ == "OK" and data[0][1] == msg and b"\\Flagged" in data[0][0], "fetch rfc822")
parsed = email.message_from_bytes(data[0][1])
check(parsed["Subject"] == "from python", "parse")
typ, data = m.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
check(typ == "OK" and data[0][1] == b"Subject: from python\r\n\r\n", "fetch header fields")
typ, data = m.uid("SEARCH", None, "ALL")
uid = data[0].split()[-1]
check(m.uid("STORE", uid, "+FLAGS", "(\\Seen $Forwarded)")[0] == "OK", "uid store")
typ, data = m.uid("FETCH", uid, "(FLAGS)")
check(b"$Forwarded" in data[0], "keyword kept")
check(m.uid("COPY", uid, "python/child")[0] == "OK", "uid copy")
typ, data = m.status("python/child", "(MESSAGES UNSEEN UIDNEXT)")
check(typ == "OK" and b"MESSAGES 1" in data[0], "status")
check(m.store(num, "+FLAGS", "\\Deleted")[0] == "OK", "store deleted")
typ, data = m.expunge()
check(typ == "OK" and data[0] == num, "expunge")
check(m.noop()[0] == "OK", "noop")
check(m.check()[0] == "OK", "check")
typ, data = m.namespace()
check(typ == "OK" and b'(("" "/"))' in data[0], "namespace")
check(m.close()[0] == "OK", "close")
check(m.delete("python/child")[0] == "OK", "delete child")
check(m.delete("python")[0] == "OK", "delete parent")
typ, data = m.select("python")
check(typ == "NO", "select deleted")
m.logout()
print("done")
