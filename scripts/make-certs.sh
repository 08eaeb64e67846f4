#!/usr/bin/env bash
# Makes a local CA (ca.pem) and a certificate it signed for
# localhost/127.0.0.1 (cert.pem, key.pem) in DIR (default .run/tls), for the
# demo's TLS listener (and, in the tests, a TLS Redis and its client); kept
# if already there. Clients trust ca.pem.
set -euo pipefail
dir="${1:-$(dirname "$0")/../.run/tls}"
mkdir -p "$dir"
cd "$dir"
[ -s ca.pem ] && [ -s cert.pem ] && [ -s key.pem ] && exit 0
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=gateway demo CA" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout key.pem -out server.csr 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth,clientAuth" \
  "subjectAltName=DNS:localhost,IP:127.0.0.1" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
  -days 365 -extfile server.ext -out cert.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 600 key.pem ca-key.pem
