#!/bin/sh
# tests/pki/gen.sh OUTDIR — the throwaway test PKI, made at test time with the openssl CLI
# (OpenSSL 3.0 on Debian 12). EC P-256 keys, SHA-256 signatures; takes well under a second.
#
# Files written to OUTDIR (keys mode 0600, certificates and the CRL 0644):
#
#   ca.crt, ca.key                      the test CA, subject "/O=Canopy Test/CN=Canopy Test CA"
#   server.crt, server.key              server cert from ca: SAN IP:127.0.0.1, DNS:localhost,
#                                       EKU serverAuth
#   server-wrong-host.crt, .key         server cert from ca for DNS:wrong.example only (no IP SAN):
#                                       connecting to 127.0.0.1 or localhost must fail verification
#   client.crt, client.key              valid client cert from ca, CN=canopy-test-client,
#                                       EKU clientAuth
#   client-expired.crt, .key            from ca, valid 2020-01-01 .. 2020-02-01 only
#   client-not-yet-valid.crt, .key      from ca, valid from 2090-01-01 only
#   client-revoked.crt, .key            from ca, and revoked in crl.pem
#   crl.pem                             ca's CRL (valid 30 days) listing client-revoked
#   ca+crl.pem                          ca.crt followed by crl.pem (for clients that take both
#                                       in one file, e.g. `openssl verify -crl_check -CAfile`)
#   wrong-ca.crt, wrong-ca.key          an unrelated CA, subject "/O=Canopy Test/CN=Canopy Wrong CA"
#   client-wrong-ca.crt, .key           client cert issued by wrong-ca
#   fake-ca.crt, fake-ca.key            an impostor CA with the SAME subject as ca but its own key
#   client-fake-ca.crt, .key            client cert issued by fake-ca; its issuer name equals ca's
#                                       subject and it carries no authorityKeyIdentifier, so a
#                                       verifier trusting ca.crt finds ca.crt as the issuer and
#                                       must fail on the signature
#   index.txt                           one line per generated file: "<file> <purpose>"
#
# Every certificate except the two CAs, fake-ca and wrong-ca, is issued with `openssl ca`, which
# (unlike `openssl x509 -req` in 3.0) takes explicit -startdate/-enddate: that is how the expired
# and not-yet-valid certificates are made without faking the clock.
# The CA databases are kept under OUTDIR/db/ (needed for the CRL).
set -eu

if [ "$#" -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
OUT=$1
OPENSSL=${OPENSSL:-openssl}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
umask 077
DB="$OUT/db"
rm -rf "$DB"
mkdir -p "$DB"

fail() {
  echo "gen.sh: $*" >&2
  exit 1
}

# quiet CMD...: runs CMD, shows its output only if it fails.
quiet() {
  if ! "$@" >"$DB/last.log" 2>&1; then
    cat "$DB/last.log" >&2
    fail "failed: $*"
  fi
}

newkey() {  # newkey FILE
  quiet "$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out "$1"
  chmod 600 "$1"
}

# One openssl ca configuration per CA, in DB/<ca>/. Extension sections are shared.
write_ca_conf() {  # write_ca_conf NAME
  d="$DB/$1"
  mkdir -p "$d/newcerts"
  : >"$d/index.txt"
  echo "unique_subject = no" >"$d/index.txt.attr"
  echo 1000 >"$d/serial"
  echo 1000 >"$d/crlnumber"
  cat >"$d/ca.conf" <<EOF
[ ca ]
default_ca = this_ca

[ this_ca ]
dir = $d
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $OUT/$1.crt
private_key = $OUT/$1.key
default_md = sha256
default_days = 3650
default_crl_days = 30
policy = policy_any
copy_extensions = none
unique_subject = no
email_in_dn = no

[ policy_any ]
organizationName = optional
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ server_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = \${ENV::CANOPY_PKI_SAN}

[ client_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ client_ext_no_akid ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
# OpenSSL 3 adds an authorityKeyIdentifier by default; "none" leaves it out.
authorityKeyIdentifier = none
EOF
}

make_ca() {  # make_ca NAME SUBJECT
  newkey "$OUT/$1.key"
  write_ca_conf "$1"
  quiet "$OPENSSL" req -new -x509 -config "$DB/$1/ca.conf" -extensions v3_ca -key "$OUT/$1.key" \
    -subj "$2" -days 3650 -sha256 -out "$OUT/$1.crt"
}

# issue CA NAME SUBJECT EXTSECTION [extra openssl ca args...]
issue() {
  ca=$1 name=$2 subj=$3 ext=$4
  shift 4
  newkey "$OUT/$name.key"
  quiet "$OPENSSL" req -new -config "$DB/$ca/ca.conf" -key "$OUT/$name.key" -subj "$subj" -out "$DB/$name.csr"
  quiet "$OPENSSL" ca -batch -notext -config "$DB/$ca/ca.conf" -extensions "$ext" \
    -in "$DB/$name.csr" -out "$OUT/$name.crt" "$@"
}

export CANOPY_PKI_SAN="DNS:unused"  # referenced by the config; set per server cert below

make_ca ca "/O=Canopy Test/CN=Canopy Test CA"
make_ca wrong-ca "/O=Canopy Test/CN=Canopy Wrong CA"
make_ca fake-ca "/O=Canopy Test/CN=Canopy Test CA"

CANOPY_PKI_SAN="IP:127.0.0.1, DNS:localhost" \
  issue ca server "/O=Canopy Test/CN=canopy-test-server" server_ext
CANOPY_PKI_SAN="DNS:wrong.example" \
  issue ca server-wrong-host "/O=Canopy Test/CN=wrong.example" server_ext

issue ca client "/O=Canopy Test/CN=canopy-test-client" client_ext
issue ca client-expired "/O=Canopy Test/CN=canopy-test-client-expired" client_ext \
  -startdate 20200101000000Z -enddate 20200201000000Z
issue ca client-not-yet-valid "/O=Canopy Test/CN=canopy-test-client-not-yet-valid" client_ext \
  -startdate 20900101000000Z -enddate 20991231000000Z
issue ca client-revoked "/O=Canopy Test/CN=canopy-test-client-revoked" client_ext
issue wrong-ca client-wrong-ca "/O=Canopy Test/CN=canopy-test-client-wrong-ca" client_ext
issue fake-ca client-fake-ca "/O=Canopy Test/CN=canopy-test-client-fake-ca" client_ext_no_akid

quiet "$OPENSSL" ca -batch -config "$DB/ca/ca.conf" -revoke "$OUT/client-revoked.crt" -crl_reason keyCompromise
quiet "$OPENSSL" ca -batch -config "$DB/ca/ca.conf" -gencrl -out "$OUT/crl.pem"
cat "$OUT/ca.crt" "$OUT/crl.pem" >"$OUT/ca+crl.pem"

# Sanity checks: the PKI is what the table above says, or the script fails.
v() { "$OPENSSL" verify "$@" >/dev/null 2>&1; }
v -CAfile "$OUT/ca.crt" "$OUT/server.crt" || fail "server.crt does not verify"
v -CAfile "$OUT/ca.crt" "$OUT/client.crt" || fail "client.crt does not verify"
v -CAfile "$OUT/ca.crt" "$OUT/client-expired.crt" && fail "client-expired.crt verifies"
v -CAfile "$OUT/ca.crt" "$OUT/client-not-yet-valid.crt" && fail "client-not-yet-valid.crt verifies"
v -CAfile "$OUT/ca.crt" "$OUT/client-wrong-ca.crt" && fail "client-wrong-ca.crt verifies"
v -CAfile "$OUT/ca.crt" "$OUT/client-fake-ca.crt" && fail "client-fake-ca.crt verifies"
v -crl_check -CAfile "$OUT/ca+crl.pem" "$OUT/client-revoked.crt" && fail "client-revoked.crt verifies against the CRL"
v -crl_check -CAfile "$OUT/ca+crl.pem" "$OUT/client.crt" || fail "client.crt fails the CRL check"

cat >"$OUT/index.txt" <<'EOF'
ca.crt ca.key                              test CA (trust anchor)
server.crt server.key                      server: IP:127.0.0.1 DNS:localhost
server-wrong-host.crt server-wrong-host.key server: DNS:wrong.example only
client.crt client.key                      valid client
client-expired.crt client-expired.key      expired client (2020-01-01..2020-02-01)
client-not-yet-valid.crt client-not-yet-valid.key  client valid from 2090
client-revoked.crt client-revoked.key      client revoked in crl.pem
crl.pem ca+crl.pem                         CRL of ca; ca.crt + CRL
wrong-ca.crt wrong-ca.key                  unrelated CA
client-wrong-ca.crt client-wrong-ca.key    client from wrong-ca
fake-ca.crt fake-ca.key                    CA with ca's subject, different key
client-fake-ca.crt client-fake-ca.key      client from fake-ca (issuer name = ca's subject)
EOF

rm -f "$DB"/*.csr "$DB/last.log"
chmod 755 "$OUT"
for f in "$OUT"/*.crt "$OUT"/*.pem "$OUT/index.txt"; do chmod 644 "$f"; done
for f in "$OUT"/*.key; do chmod 600 "$f"; done
