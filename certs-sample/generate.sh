#!/usr/bin/env bash
# Regenerates the Dispatch SAMPLE certificates in this directory:
#   - a private CA (ca.pem, ca-key.pem; ECDSA P-256, 10 years)
#   - leaf certificates for a.localhost, b.localhost and *.c.localhost, each
#     as ECDSA P-256 and RSA-2048, signed by that CA (825 days)
#   - a certbot-style layout: archive/<lineage>/*1.pem and relative symlinks
#     in live/<lineage>/ (lineages: <name> = ECDSA, <name>-rsa = RSA)
#
# THESE ARE SAMPLE KEYS, PUBLISHED IN GIT. NEVER USE THEM IN PRODUCTION.
#
# Idempotent: deletes everything it owns (ca.pem, ca-key.pem, live/, archive/)
# and regenerates it. Needs only the openssl CLI. Runnable from any cwd.
set -euo pipefail

DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
cd "$DIR"

CA_DAYS=3650
LEAF_DAYS=825

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Minimal config so results do not depend on the system openssl.cnf.
cat >"$TMP/req.cnf" <<'CNF'
[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
CNF

# Positive, non-zero 128-bit random serial (hex).
serial() { printf '0x01%s' "$(openssl rand -hex 15)"; }

gen_ec_key()  { openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
                  -pkeyopt ec_param_enc:named_curve -out "$1"; }
gen_rsa_key() { openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }

rm -rf ca.pem ca-key.pem live archive

# --- CA -------------------------------------------------------------------
gen_ec_key ca-key.pem
openssl req -new -x509 -config "$TMP/req.cnf" -extensions ca_ext \
  -key ca-key.pem -sha256 -days "$CA_DAYS" -set_serial "$(serial)" \
  -subj "/O=Dispatch SAMPLE/CN=Dispatch SAMPLE CA - NOT FOR PRODUCTION" \
  -out ca.pem

# --- Leaves -----------------------------------------------------------------
# make_lineage <lineage> <ec|rsa> <CN> <SAN DNS names...>
make_lineage() {
  local lineage="$1" type="$2" cn="$3"; shift 3
  local arch="archive/$lineage" live="live/$lineage"
  local san="" n
  for n in "$@"; do san+="${san:+,}DNS:$n"; done

  local ku="critical, digitalSignature"
  [[ "$type" == rsa ]] && ku+=", keyEncipherment"

  cat >"$TMP/$lineage.ext" <<EXT
[ leaf ]
basicConstraints       = critical, CA:FALSE
keyUsage               = $ku
extendedKeyUsage       = serverAuth
subjectAltName         = $san
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
EXT

  mkdir -p "$arch" "$live"
  if [[ "$type" == rsa ]]; then gen_rsa_key "$arch/privkey1.pem"; else gen_ec_key "$arch/privkey1.pem"; fi

  openssl req -new -config "$TMP/req.cnf" -key "$arch/privkey1.pem" \
    -subj "/O=Dispatch SAMPLE/CN=$cn" -out "$TMP/$lineage.csr"
  # x509 -req chatters on stderr even on success; show it only on failure.
  if ! openssl x509 -req -in "$TMP/$lineage.csr" -CA ca.pem -CAkey ca-key.pem \
      -set_serial "$(serial)" -days "$LEAF_DAYS" -sha256 \
      -extfile "$TMP/$lineage.ext" -extensions leaf \
      -out "$arch/cert1.pem" 2>"$TMP/x509.err"; then
    cat "$TMP/x509.err" >&2
    exit 1
  fi

  cp ca.pem "$arch/chain1.pem"
  cat "$arch/cert1.pem" ca.pem >"$arch/fullchain1.pem"

  local f
  for f in cert chain fullchain privkey; do
    ln -s "../../$arch/${f}1.pem" "$live/$f.pem"
  done
}

for type in ec rsa; do
  suffix=""; [[ "$type" == rsa ]] && suffix="-rsa"
  make_lineage "a.localhost$suffix" "$type" a.localhost   a.localhost www.a.localhost
  make_lineage "b.localhost$suffix" "$type" b.localhost   b.localhost www.b.localhost
  make_lineage "c.localhost$suffix" "$type" c.localhost   '*.c.localhost' c.localhost
done

# openssl writes private keys 0600; git only records the x bit, so use plain
# modes here. Whatever deploys these copies them to a root-owned location.
chmod 0644 ca.pem ca-key.pem archive/*/*.pem

echo "Generated SAMPLE certificates in $DIR"
