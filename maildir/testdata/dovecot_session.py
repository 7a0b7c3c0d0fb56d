#!/usr/bin/env python3
"""Run one pre-authenticated Dovecot IMAP session on a Maildir and print
Dovecot's view of it.

Usage: dovecot_session.py HOME SCRIPT
  HOME   directory holding Maildir/ (chowned to nobody; Dovecot refuses root)
  SCRIPT "make" to build the fixture (appends, flags, keywords, folders,
         subscriptions, an expunge), or "view" to only report.

The view is printed as lines the Go tests parse:
  mailbox <name> uidvalidity <n> uidnext <n>
  msg <mailbox> <uid> <size> <internaldate unix> <flags space-separated>
  sub <name>
Dovecot runs as /usr/lib/dovecot/imap with a private config: no daemon,
no network.
"""
import datetime, os, re, subprocess, sys, tempfile

home, script = sys.argv[1], sys.argv[2]

conf = f"""base_dir = {home}/.run
state_dir = {home}/.state
log_path = /dev/stderr
ssl = no
protocols = imap
mail_location = maildir:~/Maildir
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 1
first_valid_gid = 1
namespace inbox {{
  inbox = yes
  separator = /
}}
"""

def lit(data):
    return b"{%d+}\r\n" % len(data) + data

def msg(subject, body):
    return (f"From: dovecot@example.edu\nTo: alice@example.edu\nSubject: {subject}\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\n\n{body}\n").encode()

cmds = []
def c(line):
    cmds.append(line if isinstance(line, bytes) else line.encode())

if script == "make":
    c("CREATE Projects/2024")
    c("CREATE Entw&APw-rfe")
    c(b"APPEND INBOX (\\Seen $Junk $Label1) \"01-Jan-2024 10:00:00 +0000\" " + lit(msg("one", "first message")))
    c(b"APPEND INBOX (\\Flagged \\Answered) \"02-Jan-2024 11:00:00 +0000\" " + lit(msg("two", "second\nwith two lines")))
    c(b"APPEND INBOX () \"03-Jan-2024 12:00:00 +0000\" " + lit(msg("three", "to be expunged")))
    c(b"APPEND INBOX () \"04-Jan-2024 13:00:00 +0000\" " + lit(msg("four", "unflagged, stays in new")))
    c(b"APPEND Projects/2024 (\\Seen) " + lit(msg("project", "plan")))
    c(b"APPEND Entw&APw-rfe (\\Draft $Label1) " + lit(msg("draft", "unfinished")))
    c("SELECT INBOX")
    c("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    c("EXPUNGE")
    c("UNSELECT")
    c("SUBSCRIBE Projects/2024")
    c("SUBSCRIBE Entw&APw-rfe")
for box in ["INBOX", "Projects/2024", "Entw&APw-rfe", "Roost", "Roost/Child"]:
    c(f"STATUS {box} (UIDVALIDITY UIDNEXT)")
    c(f"EXAMINE {box}")
    c("UID FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE)")
c("LSUB \"\" \"*\"")
c("LOGOUT")

with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
    f.write(conf)
    confpath = f.name
os.chmod(confpath, 0o644)
env = {"USER": "alice", "HOME": home, "PATH": "/usr/bin:/bin"}
errf = tempfile.TemporaryFile()
p = subprocess.Popen(["/usr/lib/dovecot/imap", "-c", confpath], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=errf, env=env)
p.stdout.readline()  # PREAUTH

def run(i, cmd):
    """Send one command and return its untagged lines and tagged reply."""
    tag = b"t%d" % i
    p.stdin.write(tag + b" " + cmd + b"\r\n")
    p.stdin.flush()
    lines = []
    while True:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("dovecot imap exited early")
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith(tag.decode() + " "):
            return lines, line
        lines.append(line)

box = None
for i, cmd in enumerate(cmds):
    lines, reply = run(i, cmd)
    text = cmd.decode("utf-8", "replace")
    ok = reply.split(" ")[1] == "OK"
    if not ok and " Roost" not in text and not (text.startswith("UID FETCH") and box is None):
        print("dovecot-reply", text.split(" ")[0], reply)
    if text.startswith("EXAMINE "):
        box = text[len("EXAMINE "):] if ok else None
    for u in lines:
        sm = re.match(r'\* STATUS "?(.*?)"? \((.*)\)', u)
        if sm:
            kv = sm.group(2).split()
            d = dict(zip(kv[::2], kv[1::2]))
            print("mailbox", sm.group(1), "uidvalidity", d["UIDVALIDITY"], "uidnext", d["UIDNEXT"])
        fm = re.match(r"\* \d+ FETCH \((.*)\)", u)
        if fm and box is not None:
            f = fm.group(1)
            uid = re.search(r"UID (\d+)", f).group(1)
            size = re.search(r"RFC822\.SIZE (\d+)", f).group(1)
            flags = sorted(x for x in re.search(r"FLAGS \((.*?)\)", f).group(1).split() if x != "\\Recent")
            date = re.search(r'INTERNALDATE "(.*?)"', f).group(1)
            ts = int(datetime.datetime.strptime(date, "%d-%b-%Y %H:%M:%S %z").timestamp())
            print("msg", box, uid, size, ts, " ".join(flags))
        lm = re.match(r'\* LSUB \(.*?\) "/" "?(.*?)"?$', u)
        if lm:
            print("sub", lm.group(1))
p.stdin.close()
p.wait(timeout=30)
os.unlink(confpath)
errf.seek(0)
for line in errf.read().decode("utf-8", "replace").splitlines():
    if any(w in line for w in ("Error", "Panic", "Fatal", "Warning")):
        print("dovecot-log", line)
