#!/bin/sh
# mkcert.sh DIR: test certificates for the TLS tests and the Dovecot harness.
#
#   ca.pem, ca.key          a test CA
#   server.pem, server.key  CN=localhost, SAN DNS:localhost, signed by the CA
#   wrong.pem, wrong.key    CN=wrong.example, SAN DNS:wrong.example, same CA
#
# EC P-256 keys, certificates valid for 10 days from now.  Idempotent: if all
# files exist and stay valid for at least another day, nothing is done.  Not
# meant for two concurrent runs on the same DIR (give each test its own).
# Prints nothing on success; on failure, openssl's messages and exit 1.
set -eu

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 64
fi
dir=$1
openssl=${OPENSSL:-openssl}

fresh() {
  for f in ca server wrong; do
    [ -s "$dir/$f.pem" ] && [ -s "$dir/$f.key" ] || return 1
    "$openssl" x509 -in "$dir/$f.pem" -noout -checkend 86400 >/dev/null 2>&1 || return 1
  done
  return 0
}

mkdir -p "$dir"
fresh && exit 0

umask 077
tmp=$(mktemp -d "$dir/.mkcert.XXXXXX")
log=$tmp/log
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

fail() {
  cat "$log" >&2
  echo "$0: $1" >&2
  exit 1
}

serial() {
  # A random positive 63-bit serial, so regenerated certificates never
  # reuse one under the same issuer name.
  printf '0x%s' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | sed 's/^./7/')"
}

genkey() {
  "$openssl" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1" >>"$log" 2>&1 || fail "cannot create key $1"
}

cat >"$tmp/ext.cnf" <<CNF
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[localhost]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[wrong]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

genkey "$tmp/ca.key"
"$openssl" req -new -x509 -sha256 -days 10 -key "$tmp/ca.key" -subj "/CN=pop3sync test CA" \
  -set_serial "$(serial)" -config "$tmp/ext.cnf" -extensions ca -out "$tmp/ca.pem" \
  >>"$log" 2>&1 || fail "cannot create the CA"

leaf() { # leaf NAME CN SECTION
  genkey "$tmp/$1.key"
  "$openssl" req -new -sha256 -key "$tmp/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr" \
    >>"$log" 2>&1 || fail "cannot create a request for $2"
  "$openssl" x509 -req -sha256 -days 10 -in "$tmp/$1.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -set_serial "$(serial)" -extfile "$tmp/ext.cnf" -extensions "$3" -out "$tmp/$1.pem" \
    >>"$log" 2>&1 || fail "cannot sign the certificate for $2"
}
leaf server localhost localhost
leaf wrong wrong.example wrong

# Certificates are public; keys stay 0600.
chmod 644 "$tmp/ca.pem" "$tmp/server.pem" "$tmp/wrong.pem"
for f in ca.key ca.pem server.key server.pem wrong.key wrong.pem; do
  mv -f "$tmp/$f" "$dir/$f"
done
