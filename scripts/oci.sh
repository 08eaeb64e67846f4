#!/usr/bin/env bash
# Packs every filter module as an OCI image in the Wasm image format that
# Istio's WasmPlugin (`url: oci://…`) pulls, written as an OCI image layout
# directory per filter: <target>/oci/<name>/{oci-layout,index.json,blobs/sha256/…}.
# No Docker daemon, no registry, no network: bash and python3's standard library.
#
#   scripts/oci.sh                 every filter, plus `gateway` if its module is built
#   scripts/oci.sh ip-acl log-push only these
#
# Environment:
#   WASM_DIR   the modules (default: $CARGO_TARGET_DIR or target, + /wasm32-wasip1/release)
#   OCI_DIR    where the layouts go (default: $CARGO_TARGET_DIR or target, + /oci)
#   OCI_TAG    the tag (`org.opencontainers.image.ref.name`), default: the workspace version
#   SOURCE_DATE_EPOCH  if set, recorded as `org.opencontainers.image.created`;
#              otherwise the output depends only on the .wasm bytes and the tag,
#              so running this twice gives byte-identical images (same digests).
#
# Image format: the *oci* variant of the Wasm image specification
# (github.com/solo-io/wasm, spec/spec.md), exactly as Istio's image fetcher
# (pkg/wasm/imagefetcher.go, extractOCIArtifactImage) reads it and as `wasme`
# pushed it: an OCI image manifest whose config is the runtime config
# (application/vnd.module.wasm.config.v1+json) and whose two layers are that
# same runtime config and the raw module
# (application/vnd.module.wasm.content.layer.v1+wasm, the .wasm bytes
# unchanged). Istio requires exactly two layers for this variant; a manifest
# with the module as its only layer is refused ("number of layers must be 2").
#
# Push with standard tools, e.g.:
#   skopeo copy oci:target/oci/ip-acl docker://registry.example.com/gateway-filters/ip-acl:0.1.0
#   oras cp --from-oci-layout target/oci/ip-acl:0.1.0 registry.example.com/gateway-filters/ip-acl:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
WASM_DIR="${WASM_DIR:-$target/wasm32-wasip1/release}"
OCI_DIR="${OCI_DIR:-$target/oci}"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
OCI_TAG="${OCI_TAG:-${version:-latest}}"

FILTERS=(sign-auth ip-acl ext-auth access-control routing throttling param-validation threat-protection response-cache error-mapping request-mapping circuit-breaker log-push)

if [ "$#" -gt 0 ]; then
  names=("$@")
else
  names=("${FILTERS[@]}")
  # The all-in-one module is packed when it has been built.
  if [ -f "$WASM_DIR/gateway.wasm" ]; then
    names+=(gateway)
    export OCI_GATEWAY_OPTIONAL=1
  fi
fi

command -v python3 >/dev/null 2>&1 || { echo "oci: python3 is required" >&2; exit 1; }

python3 - "$WASM_DIR" "$OCI_DIR" "$OCI_TAG" "${names[@]}" <<'PYTHON'
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile

CONFIG_MEDIA_TYPE = "application/vnd.module.wasm.config.v1+json"
WASM_MEDIA_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"

wasm_dir, oci_dir, tag, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def fail(message):
    print(f"oci: {message}", file=sys.stderr)
    sys.exit(1)


def leb128(data, at):
    value, shift = 0, 0
    while True:
        if at >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def exports(module):
    """The names a Wasm binary exports (reads the export section only)."""
    if module[:4] != b"\0asm" or module[4:8] != b"\x01\0\0\0":
        raise ValueError("not a WebAssembly binary (bad magic or version)")
    at, names = 8, []
    while at < len(module):
        section = module[at]
        size, at = leb128(module, at + 1)
        if section == 7:
            count, pos = leb128(module, at)
            for _ in range(count):
                length, pos = leb128(module, pos)
                names.append(module[pos:pos + length].decode("utf-8"))
                pos += length + 1  # the name, then the export kind byte
                _, pos = leb128(module, pos)  # the index
        at += size
    return names


def canonical(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def descriptor(media_type, blob, annotations=None):
    desc = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }
    if annotations:
        desc["annotations"] = annotations
    return desc


def crate_description(name):
    try:
        with open(os.path.join("filters", name, "Cargo.toml"), encoding="utf-8") as f:
            for line in f:
                found = re.match(r'^description\s*=\s*"(.*)"\s*$', line)
                if found:
                    return found.group(1)
    except OSError:
        pass
    return None


def pack(name):
    module_name = name.replace("-", "_")
    wasm_path = os.path.join(wasm_dir, module_name + ".wasm")
    try:
        with open(wasm_path, "rb") as f:
            wasm = f.read()
    except OSError as err:
        fail(f"{wasm_path}: {err.strerror}: run `make build` first")
    try:
        abi = sorted(e for e in exports(wasm) if e.startswith("proxy_abi_version_"))
    except (ValueError, UnicodeDecodeError) as err:
        fail(f"{wasm_path}: {err}")
    if not abi:
        if name == "gateway" and os.environ.get("OCI_GATEWAY_OPTIONAL") == "1":
            # Picked up only because the file exists: a work-in-progress build
            # of the all-in-one module is skipped, not packed.
            print(f"oci: skipping {wasm_path}: not a proxy-wasm module (yet)", file=sys.stderr)
            return
        fail(f"{wasm_path} exports no proxy_abi_version_*: not a proxy-wasm module")

    # The runtime config of the Wasm image spec: the target runtime, the
    # ABI versions the module exports, the root ids it answers to.
    runtime_config = canonical({
        "type": "envoy_proxy",
        "abiVersions": abi,
        "config": {"root_ids": [module_name]},
    })
    config_desc = descriptor(CONFIG_MEDIA_TYPE, runtime_config)
    annotations = {
        "module.wasm.runtime/type": "envoy_proxy",
        "module.wasm.runtime/abi_version": ",".join(abi),
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    description = crate_description(name)
    if description:
        annotations["org.opencontainers.image.description"] = description
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        import datetime
        created = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        annotations["org.opencontainers.image.created"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_desc,
        "layers": [
            descriptor(CONFIG_MEDIA_TYPE, runtime_config,
                       {"org.opencontainers.image.title": "runtime-config.json"}),
            descriptor(WASM_MEDIA_TYPE, wasm,
                       {"org.opencontainers.image.title": "plugin.wasm"}),
        ],
        "annotations": annotations,
    })
    manifest_desc = descriptor(MANIFEST_MEDIA_TYPE, manifest,
                               {"org.opencontainers.image.ref.name": tag})
    index = canonical({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest_desc],
    })

    # Written beside the destination, then swapped in: a reader never sees a
    # half-written layout, and blobs of an older build do not linger.
    os.makedirs(oci_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=oci_dir)
    try:
        blobs = os.path.join(staging, "blobs", "sha256")
        os.makedirs(blobs)
        for blob in (runtime_config, wasm, manifest):
            with open(os.path.join(blobs, hashlib.sha256(blob).hexdigest()), "wb") as f:
                f.write(blob)
        with open(os.path.join(staging, "oci-layout"), "wb") as f:
            f.write(canonical({"imageLayoutVersion": "1.0.0"}))
        with open(os.path.join(staging, "index.json"), "wb") as f:
            f.write(index)
        os.chmod(staging, 0o755)
        dest = os.path.join(oci_dir, name)
        old = None
        if os.path.lexists(dest):
            old = tempfile.mkdtemp(prefix=f".{name}.old.", dir=oci_dir)
            os.rename(dest, os.path.join(old, name))
        os.rename(staging, dest)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"{name:<18} {manifest_desc['digest']}  {len(wasm):>8} bytes  {dest} (tag {tag})")


print(f"{'image':<18} {'manifest digest':<71}  {'module':>14}  layout")
for name in names:
    pack(name)
PYTHON

cat <<EOF
Push one with skopeo (or: oras cp --from-oci-layout $OCI_DIR/ip-acl:$OCI_TAG REGISTRY/gateway-filters/ip-acl:$OCI_TAG):
  skopeo copy oci:$OCI_DIR/ip-acl docker://REGISTRY/gateway-filters/ip-acl:$OCI_TAG
EOF
