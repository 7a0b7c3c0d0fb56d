#!/bin/sh
# Regenerates doveadm-hashes.tsv: password hashes made by Dovecot's
# `doveadm pw` (and `openssl passwd` for CRYPT $1$/$5$/$6$), the reference
# the fileauth tests verify against. Run from this directory:
#   sh make-doveadm-hashes.sh > doveadm-hashes.tsv
set -e
echo "# Hashes made by Dovecot's doveadm pw (and openssl passwd for CRYPT \$1\$/\$5\$/\$6\$)."
echo "# Format: SCHEME<TAB>password<TAB>passwd-file password field. Regenerate: sh make-doveadm-hashes.sh."
for pw in 'secret' 'pässwörd 1' 'a very long passphrase with spaces, punctuation !@#$%^&*() and more than seventy-two bytes in total..'; do
  for s in BLF-CRYPT SHA512-CRYPT SHA256-CRYPT ARGON2ID ARGON2I SSHA512 SSHA256 SSHA PBKDF2 MD5-CRYPT PLAIN CLEARTEXT CRYPT SHA512 SHA256 SHA MD5 SHA1; do
    printf '%s\t%s\t%s\n' "$s" "$pw" "$(doveadm pw -s $s -p "$pw")"
  done
  printf '%s\t%s\t%s\n' SHA512-CRYPT "$pw" "$(doveadm pw -s SHA512-CRYPT -r 10000 -p "$pw")"
  printf '%s\t%s\t%s\n' SHA256-CRYPT "$pw" "$(doveadm pw -s SHA256-CRYPT -r 7000 -p "$pw")"
  printf '%s\t%s\t%s\n' BLF-CRYPT "$pw" "$(doveadm pw -s BLF-CRYPT -r 6 -p "$pw")"
  printf '%s\t%s\t%s\n' PBKDF2 "$pw" "$(doveadm pw -s PBKDF2 -r 1000 -p "$pw")"
  printf '%s\t%s\t%s\n' SSHA256.HEX "$pw" "$(doveadm pw -s SSHA256.HEX -p "$pw")"
  printf '%s\t%s\t%s\n' SHA512.HEX "$pw" "$(doveadm pw -s SHA512.HEX -p "$pw")"
  printf '%s\t%s\t%s\n' CRYPT "$pw" "{CRYPT}$(openssl passwd -6 "$pw")"
  printf '%s\t%s\t%s\n' CRYPT "$pw" "{CRYPT}$(openssl passwd -5 "$pw")"
  printf '%s\t%s\t%s\n' CRYPT "$pw" "$(openssl passwd -1 "$pw")"
  printf '%s\t%s\t%s\n' CRYPT "$pw" "$(openssl passwd -6 -salt short "$pw")"
done
