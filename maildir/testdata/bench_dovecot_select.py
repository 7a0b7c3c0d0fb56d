#!/usr/bin/env python3
"""Time Dovecot's SELECT of a big Maildir, for docs/storage.md.

Usage: bench_dovecot_select.py HOME [N] [--drop-index]
  Creates HOME/Maildir with N (default 100000) messages named and sized
  like maildir's BenchmarkOpenSync100k, then runs a pre-authenticated
  /usr/lib/dovecot/imap per measurement (no daemon, no network) and
  prints the time of "SELECT INBOX": once cold (no dovecot-uidlist, no
  index) and five times warm (uidlist and index current). --drop-index
  first removes Dovecot's index files but keeps dovecot-uidlist: Dovecot
  then lists the directory, like Roost without roost-cache.
Then run: ROOST_BENCH_MAILDIR=HOME/Maildir go test -run '^$' -bench OpenSync100k ./maildir/
"""
import os, subprocess, sys, tempfile, time

home = sys.argv[1]
args = [a for a in sys.argv[2:] if not a.startswith("--")]
n = int(args[0]) if args else 100000
drop_index = "--drop-index" in sys.argv
md = os.path.join(home, "Maildir")
body = b"From: a@example.edu\nSubject: benchmark\n\nhello\n"
vsize = len(body) + body.count(b"\n")
if not os.path.exists(md):
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, d))
    base = int(time.time()) - 86400
    for i in range(n):
        flags = ":2," if i % 10 == 0 else ":2,S"
        name = "%d.M%dP%d.bench.example.edu,S=%d,W=%d%s" % (base + i // 100, i % 1000000, 1000 + i % 50, len(body), vsize, flags)
        with open(os.path.join(md, "cur", name), "wb") as f:
            f.write(body)
    for root, dirs, files in os.walk(home):
        for x in dirs + files:
            os.lchown(os.path.join(root, x), 65534, 65534)
    os.lchown(home, 65534, 65534)

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
with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
    f.write(conf)
    confpath = f.name
os.chmod(confpath, 0o644)

def select_time():
    p = subprocess.Popen(["/usr/lib/dovecot/imap", "-c", confpath], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env={"USER": "bench", "HOME": home, "PATH": "/usr/bin:/bin"})
    p.stdout.readline()
    t0 = time.perf_counter()
    p.stdin.write(b"a SELECT INBOX\r\n")
    p.stdin.flush()
    exists = None
    while True:
        line = p.stdout.readline()
        if line.endswith(b" EXISTS\r\n"):
            exists = int(line.split()[1])
        if line.startswith(b"a "):
            break
    dt = time.perf_counter() - t0
    p.stdin.write(b"b LOGOUT\r\n")
    p.stdin.close()
    p.wait()
    return dt, exists, line.decode().strip()

cold = not os.path.exists(os.path.join(md, "dovecot-uidlist"))
if drop_index:
    for x in os.listdir(md):
        if x.startswith("dovecot.index") or x.startswith("dovecot.list.index"):
            os.unlink(os.path.join(md, x))
dt, exists, reply = select_time()
kind = "cold" if cold else ("uidlist only, no index" if drop_index else "warm")
print("dovecot SELECT %s: %.1f ms (%s messages) %s" % (kind, dt * 1000, exists, reply))
for i in range(5):
    dt, exists, reply = select_time()
    print("dovecot SELECT warm: %.1f ms (%s messages)" % (dt * 1000, exists))
os.unlink(confpath)
