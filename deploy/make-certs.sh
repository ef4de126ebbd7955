#!/usr/bin/env bash
# A throwaway CA and a broker certificate for trying the stack out (use your PKI in production).
#   deploy/make-certs.sh [broker-host-name]     writes deploy/certs/{ca.crt,ca.key,server.crt,server.key}
#   CERT_DIR=/elsewhere deploy/make-certs.sh    writes them there instead
set -euo pipefail
name=${1:-mosquitto}
dir=${CERT_DIR:-$(dirname "$0")/certs}
mkdir -p "$dir" && cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=strandwatch test CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$name" > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile san.ext -out server.crt 2>/dev/null
rm -f server.csr san.ext ca.srl
chmod 644 ca.crt server.crt
echo "make-certs.sh: wrote $(pwd)/{ca.crt,server.crt,server.key}"
