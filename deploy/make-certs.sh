#!/usr/bin/env bash
# A throwaway CA, a broker certificate and client certificates for trying the stack out (use your
# PKI in production).
#   deploy/make-certs.sh [broker-host-name [client-name...]]
#       writes deploy/certs/{ca.crt,ca.key,server.crt,server.key} and <client-name>.{crt,key} per
#       client (CN = the name: with Mosquitto's use_identity_as_username the ACL's user name)
#   CERT_DIR=/elsewhere deploy/make-certs.sh ...    writes them there instead
# An existing ca.crt/ca.key in the directory is reused, so clients can be added later.
set -euo pipefail
name=${1:-mosquitto}
shift $(( $# > 0 ? 1 : 0 ))
dir=${CERT_DIR:-$(dirname "$0")/certs}
mkdir -p "$dir" && cd "$dir"
umask 077
if [[ ! -f ca.crt || ! -f ca.key ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=strandwatch test CA" -keyout ca.key -out ca.crt 2>/dev/null
fi
sign() {  # sign <name> <extensions>: <name>.key and a <name>.crt signed by the CA
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$2" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile "$1.ext" \
        -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext" ca.srl
    chmod 644 "$1.crt"
}
sign server "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1"
for client in "$@"; do
    sign "$client" "extendedKeyUsage=clientAuth"
done
chmod 644 ca.crt
echo "make-certs.sh: wrote $(pwd)/{ca.crt,server.crt,server.key}${*:+ and client certificates for $*}"
